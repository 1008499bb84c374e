"""Benchmark scenarios from YAML, run against real servers, with budgets as ratios to the floor.

A scenario names candidates per request, concurrency, backend (embedded | triton) and model.
For each, in the same run: `/rerank` latency percentiles and throughput, and the floor — bare
ONNX Runtime on the same pre-tokenized batches —, the two timed in turns (per request at
concurrency 1, in `FLOOR_TURNS` parts above), as is the MatMul probe of the compute limit: on a
shared machine whose speed changes for tens of seconds at a time, a ratio of two measurements
taken a minute apart measures the machine. Budgets:

    p99_vs_floor         /rerank p99 ≤ this × floor p99 (concurrency 1: paired samples)
    throughput_vs_floor  requests/s ≥ this × the floor's ceiling (1 / mean bare run time)
    p99_ms               absolute p99 in ms; only judged on the file's `reference_hardware`
                         when `--reference-hardware` says this machine is it
    p50_vs_limit         /rerank p50 ≤ this × the compute limit (the FLOPs the payloads' real
    p99_vs_limit         tokens need ÷ the fp32 MatMul rate measured in turns with the load;
                         see compute_limit.py)

Each `/rerank` result also holds `client_cpu_ms`, the load generator's own CPU per request (aiohttp,
JSON): where the client runs on the server's cores, that is CPU the server cannot have, and at
concurrency 1 it is inside every measured latency.

A scenario with `endpoint: recommend` times `/recommend` on real MovieLens histories (the file's
`recommend_data` folder) against its own floor (the recommender's ONNX model run directly); the
floor budgets apply, the compute-limit ones do not.

A scenario with `overload: true` sends more than the server admits: 503 + Retry-After is an
expected answer (counted; the client waits and retries), any other error fails the run, and the
percentiles are those of accepted requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rankstill.local_server import running_server
from rankstill.model_repo import load_model
from rankstill.pair_tokenizer import PairTokenizer

from .compute_limit import MatmulProbe, request_limits_ms
from .latency import FLOOR_TURNS, build_payloads, floor_batches, percentiles, time_http, time_paired
from .recommend_bench import measure_recommend

BUDGET_KEYS = {"p99_vs_floor", "throughput_vs_floor", "p99_ms", "p50_vs_limit", "p99_vs_limit"}
SCENARIO_KEYS = {"name", "candidates", "concurrency", "backend", "model", "requests", "warm_passes", "budgets", "overload",
                 "endpoint"}


@dataclass
class Scenario:
    name: str
    candidates: int = 100
    concurrency: int = 1
    backend: str = "embedded"  # embedded | triton
    model: str | None = None  # None: the repository's default
    requests: int = 200
    warm_passes: int = 1
    budgets: dict = field(default_factory=dict)
    overload: bool = False  # 503 + Retry-After is an expected answer
    endpoint: str = "rerank"  # rerank | recommend


@dataclass
class ScenarioFile:
    scenarios: list[Scenario]
    reference_hardware: str | None = None
    recommend_data: Path | None = None  # MovieLens folder for `endpoint: recommend` scenarios


def load_scenarios(path: Path) -> ScenarioFile:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    defaults = raw.get("defaults", {})
    scenarios = []
    for entry in raw.get("scenarios", []):
        merged = {**defaults, **entry}
        unknown = set(merged) - SCENARIO_KEYS
        if unknown or "name" not in merged:
            raise ValueError(f"{path}: scenario {entry.get('name', '?')!r} has unknown keys {sorted(unknown)} "
                             f"or no name (keys: {sorted(SCENARIO_KEYS)})")
        bad_budgets = set(merged.get("budgets", {})) - BUDGET_KEYS
        if bad_budgets:
            raise ValueError(f"{path}: scenario {merged['name']!r}: unknown budgets {sorted(bad_budgets)} (known: {sorted(BUDGET_KEYS)})")
        if merged.get("backend", "embedded") not in ("embedded", "triton"):
            raise ValueError(f"{path}: scenario {merged['name']!r}: backend must be embedded or triton")
        if merged.get("endpoint", "rerank") not in ("rerank", "recommend"):
            raise ValueError(f"{path}: scenario {merged['name']!r}: endpoint must be rerank or recommend")
        scenarios.append(Scenario(**merged))
    if not scenarios:
        raise ValueError(f"{path}: no scenarios")
    recommend_data = raw.get("recommend_data")
    return ScenarioFile(scenarios, raw.get("reference_hardware"), Path(recommend_data) if recommend_data else None)


def compute_limit(entry, payloads, rate: float) -> dict:
    tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
    lengths = [tokenizer.tokenize([q] * len(docs), docs).lengths for q, docs in payloads]
    limits = request_limits_ms(entry, lengths, rate)
    return {"mean_ms": float(np.mean(limits)), "matmul_gflops": rate / 1e9,
            "mean_real_tokens": float(np.mean([pair.sum() for pair in lengths]))}


def measure(scenario: Scenario, url: str, payloads, entry) -> dict:
    """Latencies over HTTP, the floor on the same batches and the MatMul probe of the compute limit,
    timed in turns with the HTTP load (each payload at concurrency 1, `FLOOR_TURNS` parts above);
    raw latencies kept for the CDF plot."""
    probe = MatmulProbe(entry.onnx_path)
    if scenario.concurrency == 1:
        paired = time_paired(url, payloads, entry.onnx_path, entry.tokenizer_path, entry.max_length,
                             entry.name, scenario.warm_passes, keep_samples=True, after_each=probe.run)
        http, floor = paired["http"], paired["bare_onnxruntime"]
        floor["ceiling_requests_per_s"] = 1000.0 / floor["mean_ms"]
        http["requests_per_s"] = paired["requests_per_s"]
    else:
        scorer, batches = floor_batches(entry.onnx_path, entry.tokenizer_path, entry.max_length, payloads)
        floor_s = []

        def floor_turn(indices: list[int]) -> None:
            for index in indices:
                began = time.perf_counter()
                scorer.run_prepared(batches[index])
                floor_s.append(time.perf_counter() - began)
                probe.run()

        http = asyncio.run(time_http(url, payloads, scenario.concurrency, entry.name, scenario.warm_passes,
                                     keep_samples=True, overload=scenario.overload, turns=FLOOR_TURNS,
                                     between_turns=floor_turn))
        floor = {**percentiles(floor_s), "ceiling_requests_per_s": 1.0 / float(np.mean(floor_s))}
    limit = compute_limit(entry, payloads, probe.rate)
    return {"http": http, "floor": floor, "limit": limit,
            "p99_vs_floor": http["p99_ms"] / floor["p99_ms"],
            "throughput_vs_floor": http["requests_per_s"] / floor["ceiling_requests_per_s"],
            "p50_vs_limit": http["p50_ms"] / limit["mean_ms"], "p99_vs_limit": http["p99_ms"] / limit["mean_ms"],
            "floor_p50_vs_limit": floor["p50_ms"] / limit["mean_ms"]}


def judge(scenario: Scenario, result: dict, on_reference_hardware: bool) -> list[str]:
    """Budget failures of one scenario, each naming the scenario."""
    failures = []
    budgets = scenario.budgets
    if "p99_vs_floor" in budgets and result["p99_vs_floor"] > budgets["p99_vs_floor"]:
        failures.append(f"{scenario.name}: p99 {result['p99_vs_floor']:.2f} × floor > budget {budgets['p99_vs_floor']}")
    if "throughput_vs_floor" in budgets and result["throughput_vs_floor"] < budgets["throughput_vs_floor"]:
        failures.append(f"{scenario.name}: throughput {result['throughput_vs_floor']:.2f} × floor ceiling "
                        f"< budget {budgets['throughput_vs_floor']}")
    for key in ("p50_vs_limit", "p99_vs_limit"):
        if key in budgets and result[key] > budgets[key]:
            failures.append(f"{scenario.name}: {key[:3]} {result[key]:.2f} × compute limit > budget {budgets[key]}")
    if "p99_ms" in budgets and on_reference_hardware and result["http"]["p99_ms"] > budgets["p99_ms"]:
        failures.append(f"{scenario.name}: p99 {result['http']['p99_ms']:.1f} ms > budget {budgets['p99_ms']} ms")
    return failures


@contextlib.contextmanager
def server_for(backend: str, model_repo: Path, triton_python: Path, url: str | None):
    if url:
        yield url
        return
    if backend == "embedded":
        with running_server("--model-repo", str(model_repo)) as started:
            yield started
        return
    from rankstill.server.triton.launcher import running_triton

    with tempfile.TemporaryDirectory() as workdir, \
            running_triton(model_repo, Path(workdir), triton_python) as triton, \
            running_server("--model-repo", str(model_repo), "--backend", "triton", "--triton-url", triton.grpc_url) as started:
        yield started


def run_scenarios(spec: ScenarioFile, data: Path, model_repo: Path, url: str | None = None,
                  triton_python: Path = Path(".venv-triton/bin/python"), on_reference_hardware: bool = False,
                  only: list[str] | None = None, echo=print) -> dict:
    """Run every scenario (one server per backend, reused across its scenarios); results and failures."""
    chosen = [s for s in spec.scenarios if not only or s.name in only]
    payload_cache: dict[tuple[int, int], list] = {}
    results, failures = {}, []
    for backend in dict.fromkeys(s.backend for s in chosen):
        with server_for(backend, model_repo, triton_python, url) as server_url:
            for scenario in (s for s in chosen if s.backend == backend):
                if scenario.endpoint == "recommend":
                    result = measure_recommend(server_url, model_repo, scenario.model, spec.recommend_data,
                                               scenario.requests, scenario.concurrency)
                    result["scenario"] = {**scenario.__dict__}
                    result["failures"] = judge(scenario, result, on_reference_hardware)
                    results[scenario.name] = result
                    failures += result["failures"]
                    echo(f"{scenario.name}: p50 {result['http']['p50_ms']:.2f} ms, p99 {result['http']['p99_ms']:.2f} ms "
                         f"({result['p99_vs_floor']:.2f} × floor), {result['http']['requests_per_s']:.1f} req/s "
                         f"({result['throughput_vs_floor']:.2f} × floor ceiling)" + (" FAIL" if result["failures"] else ""))
                    continue
                key = (scenario.requests, scenario.candidates)
                if key not in payload_cache:
                    payload_cache[key] = build_payloads(data, *key)
                entry = load_model(model_repo, scenario.model)
                result = measure(scenario, server_url, payload_cache[key], entry)
                result["scenario"] = {**scenario.__dict__, "model": entry.name}
                result["failures"] = judge(scenario, result, on_reference_hardware)
                results[scenario.name] = result
                failures += result["failures"]
                echo(f"{scenario.name}: p50 {result['http']['p50_ms']:.1f} ms, p99 {result['http']['p99_ms']:.1f} ms "
                     f"({result['p99_vs_floor']:.2f} × floor), {result['http']['requests_per_s']:.1f} req/s "
                     f"({result['throughput_vs_floor']:.2f} × floor ceiling); compute limit {result['limit']['mean_ms']:.1f} ms: "
                     f"p50 {result['p50_vs_limit']:.2f} ×, p99 {result['p99_vs_limit']:.2f} ×, floor p50 {result['floor_p50_vs_limit']:.2f} ×; "
                     f"the load generator's own CPU {result['http']['client_cpu_ms']:.1f} ms/request"
                     + (f", {result['http']['rejected_503']} answered 503" if scenario.overload else "")
                     + (" FAIL" if result["failures"] else ""))
    return {"reference_hardware": spec.reference_hardware, "on_reference_hardware": on_reference_hardware,
            "scenarios": results, "failures": failures}
