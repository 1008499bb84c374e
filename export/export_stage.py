"""`rankstill export`: student checkpoint → parity-checked ONNX (fp32, optional int8) → model_repo."""

from __future__ import annotations

import tempfile
from pathlib import Path

from rankstill.distill.student import load_student, score_pairs
from rankstill.distill.train_student import read_labels
from rankstill.label_store import LabelStore
from rankstill.model_repo import TOKENIZER_FILE
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import PairScorer

from .onnx_export import export_onnx, quantize_int8
from .parity import ranking_parity, value_parity
from .triton_repo import config_pbtxt, set_default, write_entry

HOMEDEPOT = "Home Depot Product Search Relevance (Kaggle 2016), split by query"
SCORE_MEANING = ("Output `scores` is a relevance logit per (query, document) pair, higher = more "
                 "relevant; the API's relevance_score is sigmoid(logit), an estimate of "
                 "(relevance - 1) / 2 on Home Depot's 1-3 scale as judged by the teacher.")
GENERIC_SCORE_MEANING = ("Output `scores` is a relevance logit per (query, document) pair, higher = more relevant; "
                         "the API's relevance_score is sigmoid(logit), an estimate of the teacher's gain in [0, 1] "
                         "(the label range mapped to [0, 1]).")


class ParityError(RuntimeError):
    """The exported model does not match its source within the stated tolerance."""


def export_student(student_dir: Path, labels_dir: Path, repo: Path, name: str, version: int,
                   int8: bool, make_default: bool, device: str = "cpu", data_description: str = HOMEDEPOT,
                   teacher: str | None = None, int8_gate: str = "raise") -> dict:
    """Parity is checked on the store's validation pairs: judged ones against human gains, or, where
    nothing was judged, all of them against the teacher's sigmoid(logit). An int8 variant that ranks
    differently beyond tolerance raises (`int8_gate="raise"`) or is left out, a stale one removed
    (`int8_gate="skip"`: fp32 is kept and the rejection reported)."""
    import numpy as np

    student, card = load_student(student_dir)
    max_length = card["shape"]["max_length"]
    tokenizer_file = student_dir / "tokenizer.json"
    tokenizer = PairTokenizer.from_file(tokenizer_file, max_length)
    pairs = read_labels(LabelStore(labels_dir), "validation", teacher)
    judged = pairs[pairs["source"] == "judged"].rename(columns={"human_label": "gain"})
    if judged.empty:
        judged = pairs[pairs["source"] != "shadow"].assign(gain=lambda f: 1 / (1 + np.exp(-f["teacher_score"].astype(float))))
    if judged.empty:
        raise ValueError(f"label store {labels_dir} has no validation pairs to check the export on")
    queries, items = list(judged["query"]), list(judged["item_text"])

    reference = score_pairs(student, tokenizer, queries, items)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = export_onnx(student, tokenizer, Path(scratch) / "fp32.onnx")
        fp32_scores = PairScorer.onnx(fp32_path, tokenizer).score(queries, items)
        parity = value_parity(reference, fp32_scores)
        if not parity["passed"]:
            raise ParityError(f"ONNX fp32 differs from PyTorch: {parity}")
        metadata = _metadata(card, max_length, "fp32", {"fp32_vs_pytorch": parity}, len(queries), data_description)
        write_entry(repo, name, version, fp32_path, metadata, config_pbtxt(name, device=device),
                    {TOKENIZER_FILE: tokenizer_file})
        results[name] = metadata
        if int8:
            int8_path = quantize_int8(fp32_path, Path(scratch) / "int8.onnx")
            int8_scores = PairScorer.onnx(int8_path, tokenizer).score(queries, items)
            ranking = ranking_parity(judged, fp32_scores, int8_scores)
            if not ranking["passed"] and int8_gate == "skip":
                import shutil

                shutil.rmtree(repo / f"{name}-int8", ignore_errors=True)
                results[f"{name}-int8"] = {"rejected": True, "parity": {"int8_vs_fp32_ranking": ranking}}
            elif not ranking["passed"]:
                raise ParityError(f"int8 ranks differently beyond tolerance: {ranking}")
        if int8 and not results.get(f"{name}-int8", {}).get("rejected"):
            metadata = _metadata(card, max_length, "int8", {"int8_vs_fp32_ranking": ranking}, len(queries), data_description)
            write_entry(repo, f"{name}-int8", version, int8_path, metadata,
                        config_pbtxt(f"{name}-int8", device=device), {TOKENIZER_FILE: tokenizer_file})
            results[f"{name}-int8"] = metadata
    if make_default:
        # int8 runs 1.2-1.6x faster on these CPUs and ranks like fp32 within the gate: it serves by default when it passed.
        int8_served = int8 and not results.get(f"{name}-int8", {}).get("rejected")
        set_default(repo, "rerank", f"{name}-int8" if int8_served else name)
    return results


def _metadata(card: dict, max_length: int, variant: str, parity: dict, pairs: int, data_description: str) -> dict:
    report = card["report"]
    return {
        "task": "rerank",
        "variant": variant,
        "max_length": max_length,
        "truncation": f"pairs longer than {max_length} tokens are cut, longer side first",
        "score": SCORE_MEANING if data_description == HOMEDEPOT else GENERIC_SCORE_MEANING,
        "architecture": {"type": "bert-cross-encoder", **card["shape"]},
        "training": {
            "teacher_ids": card.get("teacher_ids"), "labels": report.get("labels"),
            "train_queries": report.get("train_queries"), "train_pairs": report.get("train_pairs"),
            "data": data_description,
        },
        "quality": {"validation": report.get("validation"), "test": report.get("test")},
        "parity": {**parity, "checked_on_validation_pairs": pairs},
    }
