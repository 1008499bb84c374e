"""Replay real validation queries through `rankstill serve` with a teacher in shadow mode, and report
the student-teacher agreement the server measured (`/shadow/summary`).

    python -m rankstill.benchmarks.shadow_replay --teacher runs/teacher-repo/rerank-teacher --queries 300

Each request is a validation query with its 100 best BM25 candidates (what a search backend sends).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx

from rankstill.local_server import running_server

from .latency import build_payloads


def replay(teacher: str, data: Path, model_repo: Path, queries: int, candidates: int, labels: Path) -> dict:
    payloads = build_payloads(data, queries, candidates)
    args = ("--model-repo", str(model_repo), "--shadow-teacher", teacher, "--shadow-rate", "1.0",
            "--shadow-timeout", "30", "--shadow-concurrency", "1", "--shadow-queue", str(len(payloads)),
            "--shadow-labels", str(labels))
    with running_server(*args) as url, httpx.Client(base_url=url, timeout=60) as client:
        began = time.perf_counter()
        for query, documents in payloads:
            client.post("/rerank", json={"query": query, "documents": documents, "return_documents": False}).raise_for_status()
        sent = time.perf_counter() - began
        while True:
            summary = client.get("/shadow/summary").json()
            counts = summary["counts"]
            if counts.get("scored", 0) + counts.get("error", 0) + counts.get("dropped", 0) >= len(payloads):
                break
            time.sleep(1)
    return {"requests": len(payloads), "candidates": candidates, "send_seconds": round(sent, 1),
            "teacher": teacher, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="Local ONNX teacher entry or URL of a teacher server.")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--labels", type=Path, default=None, help="Label store for the harvested pairs (default: a temporary one).")
    parser.add_argument("--out", type=Path, default=Path("bench-results/shadow_replay.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = replay(args.teacher, args.data, args.model_repo, args.queries, args.candidates,
                        args.labels or Path(scratch) / "labels")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
