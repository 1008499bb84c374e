"""`rankstill teacher export`: a cross-encoder teacher checkpoint → parity-checked ONNX model entry.

The entry is an ordinary rerank model, so the teacher can be served by `rankstill serve` (a remote
shadow teacher) or loaded beside the student as a local shadow teacher, both without torch.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from rankstill.distill.data import load_judgments
from rankstill.distill.teacher import HFTeacher
from rankstill.model_repo import TOKENIZER_FILE
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import PairScorer

from .onnx_export import export_onnx
from .parity import value_parity
from .triton_repo import config_pbtxt, write_entry


def export_teacher(teacher_dir: Path, data: Path, repo: Path, name: str, max_length: int = 64,
                   parity_pairs: int = 512) -> dict:
    teacher = HFTeacher(teacher_dir, max_length=max_length)
    tokenizer_file = teacher_dir / TOKENIZER_FILE
    if teacher.is_decoder or not tokenizer_file.is_file():
        raise ValueError(f"{teacher_dir} is not a cross-encoder with a fast tokenizer.json: decoder-LLM teachers "
                         "use a prompt, not a (query, item) pair; serve them behind an HTTP /rerank endpoint instead")
    judgments = load_judgments(data)
    validation = judgments[judgments["split"] == "validation"].head(parity_pairs)
    queries, items = list(validation["query"]), list(validation["product_title"])
    reference = teacher.score(queries, items)
    tokenizer = PairTokenizer.from_file(tokenizer_file, max_length)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(teacher.model, tokenizer, Path(scratch) / "teacher.onnx")
        parity = value_parity(reference, PairScorer.onnx(path, tokenizer).score(queries, items))
        if not parity["passed"]:
            raise RuntimeError(f"ONNX teacher differs from PyTorch: {parity}")
        metadata = {"task": "rerank", "role": "teacher", "teacher_id": teacher.teacher_id,
                    "teacher_version": teacher.version, "variant": "fp32", "max_length": max_length,
                    "truncation": f"pairs longer than {max_length} tokens are cut, longer side first",
                    "source_checkpoint": str(teacher_dir),
                    "parity": {"fp32_vs_pytorch": parity, "checked_on_validation_pairs": len(queries)}}
        write_entry(repo, name, 1, path, metadata, config_pbtxt(name), {TOKENIZER_FILE: tokenizer_file})
    return metadata
