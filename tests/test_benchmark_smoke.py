"""The latency benchmark harness runs end to end on a few requests (numbers are not judged here)."""

import json
import subprocess
import sys

from conftest import DATA, FP32_MODEL, MODEL_REPO, ROOT


def test_latency_benchmark_smoke(tmp_path):
    out = tmp_path / "latency.json"
    subprocess.run([sys.executable, "benchmarks/latency.py", "--data", str(DATA), "--model-repo", str(MODEL_REPO),
                    "--requests", "6", "--candidates", "20", "--concurrency", "1", "2",
                    "--budget-p99-ratio", "1000", "--out", str(out)], check=True, cwd=ROOT)
    report = json.loads(out.read_text())
    assert report["requests"] == 6 and report["candidates"] == 20
    assert report["http"]["1"]["http"]["n"] == 6 and report["http"]["2"]["n"] == 6
    assert report["p99_ratio_concurrency_1"] > 0
    assert report["floor"]["bare_onnxruntime"]["p50_ms"] > 0


def test_bench_scenarios_smoke_writes_results_and_plots(tmp_path):
    out = tmp_path / "bench"
    subprocess.run([sys.executable, "-m", "rankstill.cli", "bench", "--scenarios", "benchmarks/smoke.yaml",
                    "--data", str(DATA), "--model-repo", str(MODEL_REPO), "--out", str(out)], check=True, cwd=ROOT)
    results = json.loads((out / "results.json").read_text())
    assert set(results["scenarios"]) == {"smoke-c1", "smoke-c4-int8", "smoke-c16-overload", "smoke-recommend-c2"}
    assert results["failures"] == []
    for name, result in results["scenarios"].items():
        assert len(result["http"]["samples_ms"]) == (10 if "recommend" in name else 6)
        assert result["http"]["requests_per_s"] > 0 and result["throughput_vs_floor"] > 0
        assert result["floor"]["p99_ms"] > 0 and result["p99_vs_floor"] > 0
        if "recommend" not in name:
            assert result["limit"]["mean_ms"] > 0 and result["limit"]["matmul_gflops"] > 1
            assert 0 < result["http"]["client_cpu_ms"] < max(result["http"]["samples_ms"]) * 6
    assert results["scenarios"]["smoke-c4-int8"]["scenario"]["model"] == "rerank-student-int8"
    assert results["scenarios"]["smoke-c16-overload"]["http"]["rejected_503"] >= 0
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_fails_and_names_the_scenario_that_breaks_its_budget(tmp_path):
    scenarios = tmp_path / "impossible.yaml"
    scenarios.write_text("defaults: {requests: 4, warm_passes: 0, candidates: 10}\n"
                         "scenarios:\n  - {name: faster-than-the-model, concurrency: 1, budgets: {p99_vs_floor: 0.01}}\n")
    result = subprocess.run([sys.executable, "-m", "rankstill.cli", "bench", "--scenarios", str(scenarios), "--data", str(DATA),
                             "--model-repo", str(MODEL_REPO), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert "faster-than-the-model: p99" in result.stderr


def test_scenario_files_with_unknown_keys_are_refused(tmp_path):
    import pytest

    from rankstill.benchmarks.scenarios import load_scenarios

    path = tmp_path / "typo.yaml"
    path.write_text("scenarios:\n  - {name: a, concurency: 8}\n")
    with pytest.raises(ValueError, match="concurency"):
        load_scenarios(path)


def test_locust_headless_run_writes_csv_and_enforces_its_budgets(tmp_path):
    import csv

    from conftest import running_server

    with running_server("--model-repo", str(MODEL_REPO)) as url:
        def locust(budget_ms: str, prefix: str):
            return subprocess.run([sys.executable, "-m", "locust", "-f", "benchmarks/locustfile.py", "--host", url, "--headless",
                                   "-u", "2", "-r", "2", "-t", "4s", "--csv", str(tmp_path / prefix), "--only-summary",
                                   "--data", str(DATA), "--queries", "10", "--candidates", "20",
                                   "--p99-budget-ms", budget_ms], cwd=ROOT, capture_output=True, text=True, timeout=120)
        within = locust("10000", "ok")
        broken = locust("0.001", "broken")
    assert within.returncode == 0, within.stderr[-2000:]
    rows = {row["Name"]: row for row in csv.DictReader((tmp_path / "ok_stats.csv").open())}
    assert int(rows["/rerank"]["Request Count"]) > 0 and int(rows["/rerank"]["Failure Count"]) == 0
    assert broken.returncode == 1 and "budget failed" in broken.stderr


def test_model_profile_charges_the_run_to_operator_types():
    from rankstill.benchmarks.profile_model import profile

    report = profile(MODEL_REPO, "rerank-student", DATA, requests=3, candidates=20, threads=1)
    operators = {row["op"]: row for row in report["operators"]}
    assert "MatMul" in operators and operators["MatMul"]["nodes_per_run"] >= 1
    assert abs(sum(row["share"] for row in report["operators"]) - 1) < 0.01
    assert report["model_runs_per_request"] >= 1 and 0 <= report["between_kernels_share"] < 1
    assert report["model_run_ms_per_request"] >= sum(row["ms_per_request"] for row in report["operators"])


def test_http_load_takes_turns_with_the_floor_and_counts_steady_throughput():
    import asyncio

    from conftest import running_server

    from rankstill.benchmarks.latency import build_payloads, time_http

    payloads = build_payloads(DATA, 12, 10)
    turns = []
    with running_server("--model-repo", str(MODEL_REPO)) as url:
        report = asyncio.run(time_http(url, payloads, 2, None, 0, keep_samples=True, turns=5,
                                       between_turns=lambda part: turns.append(list(part))))
        alone = asyncio.run(time_http(url, payloads, 1, None, 0, keep_samples=True, turns=6))  # parts of 2: never steady
    assert turns == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]  # 5 asked; parts of 2 × 2 requests at least
    assert report["turns"] == 3 and report["n"] == 12 and len(report["samples_ms"]) == 12
    # Each user waits for its answer before it sends again, so its answers are at least the fastest
    # latency apart: within the steady windows of the parts, two users give at most 2 per part plus
    # 2 per fastest latency of window (a short window can hold answers close together, so no tighter).
    fastest = min(report["samples_ms"]) / 1000
    assert 0 < report["steady_answers"] <= 2 * (report["turns"] + report["steady_seconds"] / fastest)
    assert report["requests_per_s"] > 0
    assert alone["turns"] == 6 and 0 < alone["requests_per_s"] <= 1 / (min(alone["samples_ms"]) / 1000)


def test_servers_timed_in_turns_take_each_part_one_after_the_other():
    import asyncio

    from aiohttp import web

    from rankstill.benchmarks.latency import time_in_turns

    arrivals = []

    def server(name):
        async def rerank(request):
            if name == "C":  # a server that fails: left out, the others timed as before
                return web.json_response({"detail": "broken"}, status=500)
            arrivals.append((name, (await request.json())["i"]))
            return web.json_response([])
        app = web.Application()
        app.router.add_post("/rerank", rerank)
        return app

    async def run():
        runners = [web.AppRunner(server(name)) for name in "ABC"]
        urls = {}
        for name, runner in zip("ABC", runners):
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            urls[name] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            return await time_in_turns(urls, "/rerank", [{"i": i} for i in range(12)], 2, 0, turns=3)
        finally:
            for runner in runners:
                await runner.cleanup()

    reports = asyncio.run(run())
    measured = arrivals[2:]  # after each server's first check request
    blocks = [(measured[k][0], sorted(i for _, i in measured[k:k + 4])) for k in range(0, 24, 4)]
    assert [name for name, _ in blocks] == ["A", "B", "B", "A", "A", "B"]  # the order turns round
    assert [rows for _, rows in blocks] == [[0, 1, 2, 3]] * 2 + [[4, 5, 6, 7]] * 2 + [[8, 9, 10, 11]] * 2
    assert all(blocks[k][0] == measured[k * 4 + j][0] for k in range(6) for j in range(4))
    assert {name: (r["n"], r["turns"]) for name, r in reports.items() if name != "C"} == {"A": (12, 3), "B": (12, 3)}
    assert reports["C"] == {"failed": "RuntimeError: /rerank answered HTTP 500"}


def test_peers_run_side_by_side_and_report_rankstills_advantage():
    from rankstill.benchmarks.latency import build_payloads
    from rankstill.benchmarks.peers import Peer, run_peers

    peers = [Peer("rankstill", "the default", None, ("--model-repo", str(MODEL_REPO))),
             Peer("rankstill-fp32", "fp32", None, ("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL)),
             Peer("infinity", "Infinity", None, unavailable="not installed here")]
    results = run_peers(peers, build_payloads(DATA, 8, 10), [1, 2], warm_passes=0, turns=2, echo=lambda line: None)
    assert results["infinity"]["unavailable"] == "not installed here" and "concurrency" not in results["infinity"]
    for name in ("rankstill", "rankstill-fp32"):
        assert {c: r["n"] for c, r in results[name]["concurrency"].items()} == {"1": 8, "2": 8}
    advantage = results["rankstill-fp32"]["rankstill_p99_advantage"]
    assert set(advantage) == {"1", "2"}
    assert advantage["2"] == results["rankstill-fp32"]["concurrency"]["2"]["p99_ms"] / results["rankstill"]["concurrency"]["2"]["p99_ms"]
