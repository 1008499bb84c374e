"""`/rerank` latency over HTTP vs bare ONNX Runtime on the same batches, and student vs teacher.

For each request: a real validation query and its 100 best BM25 candidates from the Home
Depot catalogue (what a search backend would send). Reports p50/p95/p99 of `/rerank` at a
given concurrency, the floor (bare ONNX Runtime on the same pre-tokenized batches), the
same student run with tokenization in-process, and the teacher on the same candidates.

    python benchmarks/latency.py --data ../shared/data/homedepot/pairs.csv.gz --teacher runs/teacher
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from rankstill.distill.bm25 import TitleIndex
from rankstill.distill.data import catalogue, load_judgments
from rankstill.local_server import running_server
from rankstill.model_repo import load_model
from rankstill.pair_tokenizer import PairTokenizer


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def build_payloads(data: Path, count: int, candidates: int) -> list[tuple[str, list[str]]]:
    judgments = load_judgments(data)
    products = catalogue(judgments)
    index = TitleIndex(list(products["product_uid"]), list(products["product_title"]))
    title_of = dict(zip(products["product_uid"], products["product_title"]))
    queries = list(dict.fromkeys(judgments.loc[judgments["split"] == "validation", "query"]))
    payloads = []
    for query in queries:
        hits = index.top_k(query, candidates)
        if len(hits) == candidates:
            payloads.append((query, [title_of[item] for item, _ in hits]))
        if len(payloads) == count:
            break
    return payloads


def time_floor(onnx_path: Path, tokenizer: PairTokenizer, payloads, threads: int | None) -> dict:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    batches = [tokenizer.encode([q] * len(docs), docs).as_feeds() for q, docs in payloads]
    session.run(None, batches[0])
    bare, with_tokenization = [], []
    for (query, docs), feeds in zip(payloads, batches):
        began = time.perf_counter()
        session.run(None, feeds)
        bare.append(time.perf_counter() - began)
        began = time.perf_counter()
        session.run(None, tokenizer.encode([query] * len(docs), docs).as_feeds())
        with_tokenization.append(time.perf_counter() - began)
    return {"bare_onnxruntime": percentiles(bare), "tokenize_plus_onnxruntime": percentiles(with_tokenization)}


async def time_http(url: str, payloads, concurrency: int, model: str | None) -> dict:
    latencies: list[float] = []
    queue = list(payloads)

    async def user(client: httpx.AsyncClient):
        while queue:
            query, docs = queue.pop()
            body = {"query": query, "documents": docs, "return_documents": False, "model": model}
            began = time.perf_counter()
            response = await client.post("/rerank", json=body)
            latencies.append(time.perf_counter() - began)
            response.raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await client.post("/rerank", json={"query": "warm", "documents": ["up"]})
        began = time.perf_counter()
        await asyncio.gather(*[user(client) for _ in range(concurrency)])
        wall = time.perf_counter() - began
    return {**percentiles(latencies), "requests_per_s": len(latencies) / wall}


def time_teacher(teacher_dir: Path, payloads, repeats: int) -> dict:
    from rankstill.distill.teacher import HFTeacher
    from rankstill.export.onnx_export import export_onnx

    teacher = HFTeacher(teacher_dir, max_length=64)
    sample = payloads[:repeats]
    torch_times = []
    for query, docs in sample:
        began = time.perf_counter()
        teacher.score([query] * len(docs), docs, batch_size=len(docs))
        torch_times.append(time.perf_counter() - began)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = PairTokenizer.from_file(teacher_dir / "tokenizer.json", 64)
        path = export_onnx(teacher.model, tokenizer, Path(scratch) / "teacher.onnx")
        onnx = time_floor(path, tokenizer, sample, None)["bare_onnxruntime"]
    return {"pytorch": percentiles(torch_times), "bare_onnxruntime": onnx}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default=None, help="Model to time (default: the repository's default).")
    parser.add_argument("--teacher", type=Path, default=None, help="Teacher checkpoint to compare with.")
    parser.add_argument("--url", default=None, help="A running server; default: start one per backend.")
    parser.add_argument("--backends", nargs="+", default=["embedded"], choices=["embedded", "triton"],
                        help="triton also starts a real Triton server (needs `make triton-env`).")
    parser.add_argument("--triton-python", type=Path, default=Path(".venv-triton/bin/python"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--teacher-repeats", type=int, default=10)
    parser.add_argument("--budget-p99-ratio", type=float, default=1.3,
                        help="Fail when /rerank p99 at concurrency 1 exceeds this × bare ONNX Runtime p99.")
    parser.add_argument("--out", type=Path, default=Path("bench-results/latency.json"))
    args = parser.parse_args()

    entry = load_model(args.model_repo, args.model)
    tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
    payloads = build_payloads(args.data, args.requests, args.candidates)
    report = {"model": entry.name, "candidates": args.candidates, "requests": len(payloads),
              "floor": time_floor(entry.onnx_path, tokenizer, payloads, None), "http": {}}

    def run_http(url: str, backend: str) -> None:
        for concurrency in args.concurrency:
            key = str(concurrency) if backend == "embedded" else f"{backend}-{concurrency}"
            report["http"][key] = asyncio.run(time_http(url, payloads, concurrency, entry.name))

    if args.url:
        run_http(args.url, "embedded")
    for backend in [] if args.url else args.backends:
        if backend == "embedded":
            with running_server("--model-repo", str(args.model_repo)) as url:
                run_http(url, backend)
            continue
        from rankstill.server.triton.launcher import running_triton

        with tempfile.TemporaryDirectory() as workdir, \
                running_triton(args.model_repo, Path(workdir), args.triton_python) as triton, \
                running_server("--model-repo", str(args.model_repo), "--backend", "triton",
                               "--triton-url", triton.grpc_url) as url:
            run_http(url, backend)
    # The floor again after the HTTP runs, so drift on a shared machine shows.
    report["floor_after"] = time_floor(entry.onnx_path, tokenizer, payloads, None)
    if args.teacher:
        report["teacher"] = time_teacher(args.teacher, payloads, args.teacher_repeats)
        report["student_speedup_vs_teacher"] = {
            "onnxruntime_p50": report["teacher"]["bare_onnxruntime"]["p50_ms"] / report["floor"]["bare_onnxruntime"]["p50_ms"],
            "pytorch_teacher_p50": report["teacher"]["pytorch"]["p50_ms"] / report["floor"]["bare_onnxruntime"]["p50_ms"],
        }
    floor_p99 = statistics.mean([report["floor"]["bare_onnxruntime"]["p99_ms"],
                                 report["floor_after"]["bare_onnxruntime"]["p99_ms"]])
    if "1" in report["http"]:
        report["p99_ratio_concurrency_1"] = report["http"]["1"]["p99_ms"] / floor_p99
        report["p50_ratio_concurrency_1"] = report["http"]["1"]["p50_ms"] / report["floor"]["bare_onnxruntime"]["p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ratio = report.get("p99_ratio_concurrency_1")
    if ratio is not None and ratio > args.budget_p99_ratio:
        raise SystemExit(f"FAIL: /rerank p99 is {ratio:.2f} × bare ONNX Runtime (budget {args.budget_p99_ratio})")


if __name__ == "__main__":
    main()
