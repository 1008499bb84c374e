"""The whole CLI chain on a small real slice: teacher → label → train → export → serve."""

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch

from rankstill.distill.student import load_student, score_pairs
from rankstill.label_store import LabelStore
from rankstill.pair_tokenizer import PairTokenizer

from conftest import running_server


def rankstill(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rankstill.cli", *args], check=True)


def test_cli_pipeline_end_to_end(data_path, tmp_path):
    teacher, labels, student, repo = (tmp_path / n for n in ("teacher", "labels", "student", "repo"))
    rankstill("teacher", "train", "--data", str(data_path), "--out", str(teacher),
              "--max-steps", "3", "--batch-size", "8", "--max-queries", "8", "--max-length", "48")
    assert (teacher / "report.json").is_file() and (teacher / "rankstill_teacher.json").is_file()

    rankstill("label", "--data", str(data_path), "--teacher", str(teacher), "--out", str(labels),
              "--k", "3", "--max-queries", "8", "--part-size", "128")
    store = LabelStore(labels).read()
    assert set(store["source"]) == {"judged", "bm25"}
    assert set(store["teacher_id"]) == {"minilm-l6-homedepot"}

    rankstill("train", "--labels", str(labels), "--out", str(student), "--epochs", "2",
              "--layers", "1", "--hidden", "64", "--heads", "2", "--intermediate", "128",
              "--queries-per-step", "4", "--device", "auto")
    assert json.loads((student / "report.json").read_text())["device"] == ("cuda" if torch.cuda.is_available() else "cpu")

    rankstill("export", "--student", str(student), "--labels", str(labels), "--model-repo", str(repo),
              "--name", "tiny", "--no-int8")
    assert (repo / "tiny" / "1" / "model.onnx").is_file() and (repo / "tiny" / "config.pbtxt").is_file()

    model, card = load_student(student)
    tokenizer = PairTokenizer.from_file(student / "tokenizer.json", card["shape"]["max_length"])
    documents = ["stainless steel kitchen sink", "garden hose 50 ft", "kitchen faucet"]
    expected = score_pairs(model, tokenizer, ["kitchen sink"] * 3, documents)
    with running_server("--model-repo", str(repo)) as url:
        answer = httpx.post(f"{url}/rerank", json={"query": "kitchen sink", "texts": documents, "raw_scores": True}).json()
    served = {r["index"]: r["score"] for r in answer}
    assert [served[i] for i in range(3)] == pytest.approx(list(expected), abs=1e-4)
