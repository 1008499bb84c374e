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
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import aiohttp
import httpx
import numpy as np

from rankstill.distill.bm25 import TitleIndex
from rankstill.distill.data import catalogue, load_judgments
from rankstill.local_server import free_port, http_ok, running_server, stop_process, wait_until_ready
from rankstill.model_repo import load_model
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import PairScorer, onnx_session

FLOOR_TURNS = 4  # above concurrency 1, `rankstill bench` times the load and the floor in turns this many times


@contextlib.contextmanager
def slow_teacher(delay: float, fail: bool = False):
    """The stand-in teacher of benchmarks/slow_teacher.py on a free loopback port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("slow_teacher.py")),
                                "--port", str(port), "--delay", str(delay), *(["--fail"] if fail else [])])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(lambda: http_ok(f"{url}/readyz"), process, 30, "slow teacher")
        yield url
    finally:
        stop_process(process)


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def build_payloads(data: Path, count: int, candidates: int) -> list[tuple[str, list[str]]]:
    judgments = load_judgments(data)
    products = catalogue(judgments)
    index = TitleIndex.of_products(products)
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


def floor_batches(onnx_path: Path, tokenizer_file: Path, max_length: int, payloads):
    """A scorer on the model (with the server's padding policy) and each payload tokenized and
    assembled in advance: timing `scorer.run_prepared` is bare model work."""
    scorer = PairScorer.onnx(onnx_path, PairTokenizer.from_file(tokenizer_file, max_length))
    batches = [scorer.prepare([scorer.tokenize([q] * len(docs), docs)]) for q, docs in payloads]
    scorer.run_prepared(batches[0])
    return scorer, batches


def time_floor(onnx_path: Path, tokenizer_file: Path, max_length: int, payloads) -> dict:
    """Bare ONNX Runtime on pre-assembled batches, and with tokenization (cold and cached)."""
    scorer, batches = floor_batches(onnx_path, tokenizer_file, max_length, payloads)
    cold = PairScorer(PairTokenizer.from_file(tokenizer_file, max_length), scorer.runners, scorer.max_batch_pairs,
                      scorer.run_overhead_tokens)  # nothing cached yet
    bare, with_tokenization, with_cached_tokens = [], [], []
    for (query, docs), batch in zip(payloads, batches):
        began = time.perf_counter()
        scorer.run_prepared(batch)
        bare.append(time.perf_counter() - began)
        began = time.perf_counter()
        cold.score([query] * len(docs), docs)
        with_tokenization.append(time.perf_counter() - began)
        began = time.perf_counter()
        scorer.score([query] * len(docs), docs)
        with_cached_tokens.append(time.perf_counter() - began)
    return {"bare_onnxruntime": percentiles(bare), "tokenize_plus_onnxruntime": percentiles(with_tokenization),
            "cached_tokens_plus_onnxruntime": percentiles(with_cached_tokens)}


def load_client(url: str, connections: int) -> aiohttp.ClientSession:
    """The load generator's HTTP client. aiohttp rather than httpx: on a small machine the client shares
    the server's cores, and per 100-document request aiohttp spends 0.6 ms of CPU where httpx spends 1.8."""
    # Idle connections are closed after 2 s, before uvicorn's 5 s: a connection the server is closing
    # is never reused (the bench leaves them idle while it times the floor).
    return aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=60),
                                 connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=2.0))


async def post(session: aiohttp.ClientSession, path: str, body: dict) -> tuple[int, dict]:
    """(status, headers) once the whole response has arrived."""
    async with session.post(path, json=body) as response:
        await response.read()
        return response.status, dict(response.headers)


def check_status(status: int, path: str) -> None:
    if status >= 400:
        raise RuntimeError(f"{path} answered HTTP {status}")


def rerank_bodies(payloads, model: str | None) -> list[dict]:
    """/rerank bodies of (query, documents) payloads, naming `model` when given."""
    return [{"query": query, "documents": docs, "return_documents": False} | ({"model": model} if model else {})
            for query, docs in payloads]


async def time_http(url: str, payloads, concurrency: int, model: str | None, warm_passes: int, **options) -> dict:
    """`time_load` of /rerank on (query, documents) payloads."""
    return await time_load(url, "/rerank", rerank_bodies(payloads, model), concurrency, warm_passes, **options)


async def time_load(url: str, path: str, bodies: list[dict], concurrency: int, warm_passes: int,
                    keep_samples: bool = False, overload: bool = False, turns: int = 1,
                    between_turns: Callable[[list[int]], None] | None = None) -> dict:
    """Latency and throughput of POST `path` with `concurrency` users sending `bodies` back to back,
    after `warm_passes` unmeasured passes over them (a /rerank server in steady state has seen its
    catalogue's documents: their tokens are cached).

    Throughput counts steady load only: from a pass's first answer to its last request sent, every
    user has a request in flight (a pass too short to get there counts whole).

    `turns`, `between_turns`: the measured pass goes in up to that many parts (each long enough for
    `concurrency` users to be steady), and `between_turns(body indices)` runs after each with no
    request in flight: `rankstill bench` times the floor there, so that a shared machine's slow
    spells weigh on the server and on its floor alike.

    `overload`: the load is meant to exceed what the server admits, so a 503 is an expected answer:
    it is counted, the user waits Retry-After and sends the same body again; latencies are those
    of accepted requests. Any other error status fails the run."""
    load = _Load(path, bodies, concurrency, overload)
    parts = load.parts(turns)
    async with load_client(url, concurrency + 1) as session:
        await load.warm(session, warm_passes)
        for part in parts:
            await load.run(session, part)
            if between_turns is not None:
                between_turns(part)
    return load.report(len(parts), warm_passes, keep_samples)


async def time_in_turns(urls: dict[str, str], path: str, bodies: list[dict], concurrency: int, warm_passes: int,
                        turns: int) -> dict[str, dict]:
    """`time_load` of several servers (name → URL) on the same bodies, in turns: each part of the
    bodies goes to every server, one after the other (the order turns round), so that a shared
    machine's slow spells weigh on them alike. Idle servers wait between their turns. A server that
    fails (an error status, a lost connection) sits out the later turns and reports `{"failed": why}`."""
    loads = {name: _Load(path, bodies, concurrency, overload=False) for name in urls}
    failed: dict[str, str] = {}

    async def attempt(name: str, step, *args) -> None:
        if name not in failed:
            try:
                await step(*args)
            except Exception as error:
                failed[name] = f"{type(error).__name__}: {error}"

    parts = next(iter(loads.values())).parts(turns) if loads else []
    async with contextlib.AsyncExitStack() as stack:
        sessions = {name: await stack.enter_async_context(load_client(url, concurrency + 1)) for name, url in urls.items()}
        for name, load in loads.items():
            await attempt(name, load.warm, sessions[name], warm_passes)
        names = list(urls)
        for turn, part in enumerate(parts):
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                await attempt(name, loads[name].run, sessions[name], part)
    return {name: {"failed": failed[name]} if name in failed else load.report(len(parts), warm_passes, keep_samples=False)
            for name, load in loads.items()}


class _Load:
    """One server's measured passes (see `time_load`): latencies, 503s, steady throughput, client CPU."""

    def __init__(self, path: str, bodies: list[dict], concurrency: int, overload: bool):
        self.path, self.bodies, self.concurrency, self.overload = path, bodies, concurrency, overload
        self.latencies: list[float] = []
        self.rejected, self.steady_answers, self.steady_seconds, self.cpu = 0, 0, 0.0, 0.0

    def parts(self, turns: int) -> list[list[int]]:
        """The bodies' indices in up to `turns` parts of at least two requests per user."""
        count = max(1, min(turns, len(self.bodies) // (2 * self.concurrency)))
        return [part.tolist() for part in np.array_split(np.arange(len(self.bodies)), count)]

    async def warm(self, session: aiohttp.ClientSession, passes: int) -> None:
        check_status((await post(session, self.path, self.bodies[0]))[0], self.path)
        await self._pass(session, list(range(len(self.bodies))) * passes, measured=False)

    async def run(self, session: aiohttp.ClientSession, chosen: list[int]) -> None:
        cpu_began = time.process_time()
        await self._pass(session, chosen, measured=True)
        self.cpu += time.process_time() - cpu_began

    async def _pass(self, session: aiohttp.ClientSession, chosen: list[int], measured: bool) -> None:
        queue = list(reversed(chosen))
        answered, began_pass, last_sent = [], time.perf_counter(), 0.0

        async def user():
            nonlocal last_sent
            while queue:
                body = self.bodies[queue.pop()]
                last_sent = time.perf_counter()
                while True:
                    began = time.perf_counter()
                    status, headers = await post(session, self.path, body)
                    if not (self.overload and status == 503):
                        break
                    self.rejected += int(measured)
                    await asyncio.sleep(float(headers.get("Retry-After", "1")))
                answered.append(time.perf_counter())
                if measured:
                    self.latencies.append(answered[-1] - began)
                check_status(status, self.path)

        await asyncio.gather(*[user() for _ in range(self.concurrency)])
        if not measured:
            return
        first = min(answered)
        steady = sum(first < at <= last_sent for at in answered)
        if steady:
            self.steady_answers += steady
            self.steady_seconds += last_sent - first
        else:  # too few requests per user to be steady: the whole pass counts
            self.steady_answers += len(answered)
            self.steady_seconds += max(answered) - began_pass

    def report(self, turns: int, warm_passes: int, keep_samples: bool) -> dict:
        report = {**percentiles(self.latencies), "requests_per_s": self.steady_answers / self.steady_seconds,
                  "steady_answers": self.steady_answers, "steady_seconds": self.steady_seconds,
                  "turns": turns, "warm_passes": warm_passes, "rejected_503": self.rejected,
                  "client_cpu_ms": 1000 * self.cpu / (len(self.latencies) + self.rejected)}
        if keep_samples:
            report["samples_ms"] = [round(s * 1000, 3) for s in self.latencies]
        return report


def time_paired(url: str, payloads, onnx_path: Path, tokenizer_file: Path, max_length: int,
                model: str, warm_passes: int, keep_samples: bool = False,
                after_each: Callable[[], None] | None = None) -> dict:
    """Concurrency 1, paired: for each payload, bare ONNX Runtime on its pre-assembled batch and
    then the same payload over HTTP, so drift on a shared machine hits both alike; then
    `after_each()` (`rankstill bench` times its MatMul probe there)."""
    scorer, batches = floor_batches(onnx_path, tokenizer_file, max_length, payloads)
    bodies = rerank_bodies(payloads, model)
    bare, http, client_cpu = [], [], 0.0

    async def run() -> None:
        nonlocal client_cpu
        async with load_client(url, 1) as session:
            for body in bodies * warm_passes:
                check_status((await post(session, "/rerank", body))[0], "/rerank")
            for batch, body in zip(batches, bodies):
                began = time.perf_counter()
                scorer.run_prepared(batch)
                bare.append(time.perf_counter() - began)
                began, cpu_began = time.perf_counter(), time.process_time()
                status, _ = await post(session, "/rerank", body)
                http.append(time.perf_counter() - began)
                client_cpu += time.process_time() - cpu_began
                check_status(status, "/rerank")
                if after_each is not None:
                    after_each()

    asyncio.run(run())
    report = {"bare_onnxruntime": percentiles(bare),
              "http": {**percentiles(http), "client_cpu_ms": 1000 * client_cpu / len(http)},
              "warm_passes": warm_passes, "requests_per_s": len(http) / sum(http)}
    if keep_samples:
        report["http"]["samples_ms"] = [round(s * 1000, 3) for s in http]
    report["p50_ratio"] = report["http"]["p50_ms"] / report["bare_onnxruntime"]["p50_ms"]
    report["p99_ratio"] = report["http"]["p99_ms"] / report["bare_onnxruntime"]["p99_ms"]
    return report


def time_teacher(teacher_dir: Path, student, payloads, repeats: int) -> dict:
    """Teacher (PyTorch, and exported to ONNX Runtime) and student on the same candidates,
    interleaved per payload; ONNX Runtime timings are on pre-tokenized batches."""
    from rankstill.distill.teacher import HFTeacher
    from rankstill.export.onnx_export import export_onnx

    teacher = HFTeacher(teacher_dir, max_length=64)
    sample = payloads[:repeats]
    teacher_tokenizer = PairTokenizer.from_file(teacher_dir / "tokenizer.json", 64)
    student_tokenizer = PairTokenizer.from_file(student.tokenizer_path, student.max_length)
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(teacher.model, teacher_tokenizer, Path(scratch) / "teacher.onnx")
        teacher_session = onnx_session(path)
        student_session = onnx_session(student.onnx_path)
        times: dict[str, list[float]] = {"teacher_pytorch": [], "teacher_onnxruntime": [], "student_onnxruntime": []}
        for query, docs in sample:
            began = time.perf_counter()
            teacher.score([query] * len(docs), docs, batch_size=len(docs))
            times["teacher_pytorch"].append(time.perf_counter() - began)
            for name, session, tokenizer in (("teacher_onnxruntime", teacher_session, teacher_tokenizer),
                                             ("student_onnxruntime", student_session, student_tokenizer)):
                feeds = tokenizer.encode([query] * len(docs), docs).as_feeds()
                session.run(None, feeds)  # warm
                began = time.perf_counter()
                session.run(None, feeds)
                times[name].append(time.perf_counter() - began)
    report = {name: percentiles(values) for name, values in times.items()}
    student_p50 = report["student_onnxruntime"]["p50_ms"]
    report["student_speedup_p50"] = {"vs_teacher_onnxruntime": report["teacher_onnxruntime"]["p50_ms"] / student_p50,
                                     "vs_teacher_pytorch": report["teacher_pytorch"]["p50_ms"] / student_p50}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--model", default=None, help="Model to time (default: the repository's default).")
    parser.add_argument("--teacher", type=Path, default=None, help="Teacher checkpoint to compare with.")
    parser.add_argument("--url", default=None, help="A running server; default: start one per backend.")
    parser.add_argument("--backends", nargs="+", default=["embedded"], choices=["embedded", "triton", "shadow"],
                        help="triton also starts a real Triton server (needs `make triton-env`); shadow serves "
                             "embedded with every request shadowed to a slow teacher (see --shadow-delay).")
    parser.add_argument("--shadow-delay", type=float, default=2.0, help="Seconds the stand-in shadow teacher takes per call.")
    parser.add_argument("--shadow-teacher", default=None,
                        help="Shadow to this teacher (local ONNX entry or URL) instead of the slow stand-in.")
    parser.add_argument("--triton-python", type=Path, default=Path(".venv-triton/bin/python"))
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1])
    parser.add_argument("--teacher-repeats", type=int, default=10)
    parser.add_argument("--warm-passes", type=int, default=1,
                        help="Unmeasured passes over the payloads before measuring (0: every document is new to the server).")
    parser.add_argument("--budget-p99-ratio", type=float, default=1.3,
                        help="Fail when /rerank p99 at concurrency 1 exceeds this × bare ONNX Runtime p99 (paired samples).")
    parser.add_argument("--out", type=Path, default=Path("bench-results/latency.json"))
    args = parser.parse_args()

    entry = load_model(args.model_repo, args.model)
    payloads = build_payloads(args.data, args.requests, args.candidates)
    report = {"model": entry.name, "candidates": args.candidates, "requests": len(payloads),
              "floor": time_floor(entry.onnx_path, entry.tokenizer_path, entry.max_length, payloads),
              "http": {}}

    def run_http(url: str, backend: str) -> None:
        for concurrency in args.concurrency:
            key = str(concurrency) if backend == "embedded" else f"{backend}-{concurrency}"
            if concurrency == 1:
                report["http"][key] = time_paired(url, payloads, entry.onnx_path, entry.tokenizer_path,
                                                  entry.max_length, entry.name, args.warm_passes)
            else:
                report["http"][key] = asyncio.run(time_http(url, payloads, concurrency, entry.name, args.warm_passes))

    if args.url:
        run_http(args.url, "embedded")
    from rankstill.benchmarks.scenarios import server_for  # the scenario runner's server start-up

    for backend in [] if args.url else args.backends:
        if backend == "shadow":
            teacher = contextlib.nullcontext(args.shadow_teacher) if args.shadow_teacher else slow_teacher(args.shadow_delay)
            with teacher as teacher_url, \
                    running_server("--model-repo", str(args.model_repo), "--shadow-teacher", teacher_url,
                                   "--shadow-rate", "1.0", "--shadow-timeout", str(args.shadow_delay + 1)) as url:
                run_http(url, backend)
                report["shadow_summary"] = httpx.get(f"{url}/shadow/summary").json()["counts"]
            continue
        with server_for(backend, args.model_repo, args.triton_python, None) as url:
            run_http(url, backend)
    # The floor again after the HTTP runs, so drift on a shared machine shows.
    report["floor_after"] = time_floor(entry.onnx_path, entry.tokenizer_path, entry.max_length, payloads)
    if args.teacher:
        report["teacher"] = time_teacher(args.teacher, entry, payloads, args.teacher_repeats)
    if "1" in report["http"]:
        report["p99_ratio_concurrency_1"] = report["http"]["1"]["p99_ratio"]
        report["p50_ratio_concurrency_1"] = report["http"]["1"]["p50_ratio"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    ratio = report.get("p99_ratio_concurrency_1")
    if ratio is not None and ratio > args.budget_p99_ratio:
        raise SystemExit(f"FAIL: /rerank p99 is {ratio:.2f} × bare ONNX Runtime (budget {args.budget_p99_ratio})")


if __name__ == "__main__":
    main()
