"""Quality next to speed: NDCG@10 on validation queries for random, BM25, teacher and students,
and the students' speedup over the teacher on the same candidates (bare ONNX Runtime)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rankstill.distill.bm25 import TitleIndex, bm25_scores_for
from rankstill.distill.data import catalogue, load_judgments
from rankstill.distill.evaluate import gain_retention, ranking_report
from rankstill.model_repo import read_entry
from rankstill.scoring import PairScorer

from .latency import build_payloads


def quality_report(data: Path, models: dict[str, Path], timing_payloads: int = 20, candidates: int = 100) -> dict:
    """`models` maps a column name (teacher, student-fp32, ...) to an ONNX model entry directory."""
    judgments = load_judgments(data)
    validation = judgments[judgments["split"] == "validation"].copy()
    validation["bm25"] = bm25_scores_for(validation, TitleIndex.of_products(catalogue(judgments)))
    engines = {name: PairScorer.for_entry(read_entry(path)) for name, path in models.items()}
    for name, engine in engines.items():
        validation[name] = engine.score(list(validation["query"]), list(validation["product_title"]))
    report = ranking_report(validation, ["bm25", *engines])
    ndcg = report["ndcg@10"]
    if "teacher" in ndcg:
        report["gain_retention"] = {name: gain_retention(ndcg, name) for name in engines if name != "teacher"}
        report["speed"] = _speedups(engines, build_payloads(data, timing_payloads, candidates))
    return report


def _speedups(engines: dict[str, PairScorer], payloads) -> dict:
    """p50 ms per request of `candidates` pairs, models interleaved per payload, tokenization included."""
    times = {name: [] for name in engines}
    for query, documents in payloads:
        for name, engine in engines.items():
            engine.score([query] * len(documents), documents)  # warm (and cache the documents' tokens)
            began = time.perf_counter()
            engine.score([query] * len(documents), documents)
            times[name].append(time.perf_counter() - began)
    p50 = {name: float(np.median(values) * 1000) for name, values in times.items()}
    return {"p50_ms": p50, "speedup_vs_teacher": {name: p50["teacher"] / value for name, value in p50.items() if name != "teacher"},
            "candidates": len(payloads[0][1]), "payloads": len(payloads)}


def format_quality(report: dict) -> str:
    lines = ["| model | NDCG@10 (validation) | share of teacher's gain over random | speedup vs teacher |", "|---|---|---|---|"]
    retention = report.get("gain_retention", {})
    speedup = report.get("speed", {}).get("speedup_vs_teacher", {})
    for name, value in report["ndcg@10"].items():
        kept = f"{retention[name]:.0%}" if retention.get(name) is not None else ""
        fast = f"{speedup[name]:.1f}×" if name in speedup else ""
        lines.append(f"| {name} | {value:.4f} | {kept} | {fast} |")
    return "\n".join(lines)
