"""Where the model's own time goes: ONNX Runtime's profiler on the served model over 100-candidate
payloads (pre-tokenized, the server's padding), summed per operator type.

    python -m rankstill.benchmarks.profile_model [--model rerank-student] [--threads 2]

Prints milliseconds per request by operator type, nodes per run and the share of the model run spent
between kernels (thread hand-offs and ONNX Runtime's own bookkeeping).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

from rankstill.model_repo import load_model
from rankstill.scoring import OnnxRunner

from .latency import build_payloads, floor_batches


def profile(model_repo: Path, model: str | None, data: Path, requests: int, candidates: int,
            threads: int | None) -> dict:
    import onnxruntime as ort

    entry = load_model(model_repo, model)
    payloads = build_payloads(data, requests, candidates)
    _, batches = floor_batches(entry.onnx_path, entry.tokenizer_path, entry.max_length, payloads)
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "profile")
        runner = OnnxRunner(entry.onnx_path, threads, options)
        for batch in batches:
            for _, encoded in batch.chunks:
                runner.run(encoded.as_feeds())
        events = json.loads(Path(runner.session.end_profiling()).read_text())
    kernel_us, nodes, run_us, runs = collections.Counter(), collections.Counter(), 0.0, 0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            kernel_us[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
        elif event.get("cat") == "Session" and event["name"] == "model_run":
            run_us, runs = run_us + event["dur"], runs + 1
    per_request = 1000.0 * len(batches)
    return {
        "model": entry.name, "threads": threads, "requests": len(batches), "model_runs_per_request": runs / len(batches),
        "model_run_ms_per_request": run_us / per_request,
        "between_kernels_share": 1 - sum(kernel_us.values()) / run_us,
        "operators": [{"op": op, "ms_per_request": round(us / per_request, 3), "nodes_per_run": nodes[op] // runs,
                       "share": round(us / sum(kernel_us.values()), 3)} for op, us in kernel_us.most_common()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default=None, help="Entry to profile (default: the repository's default).")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="Intra-op threads (default: all cores, as served).")
    args = parser.parse_args()
    print(json.dumps(profile(args.model_repo, args.model, args.data, args.requests, args.candidates, args.threads),
                     indent=2))


if __name__ == "__main__":
    main()
