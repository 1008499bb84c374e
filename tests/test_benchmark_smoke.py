"""The latency benchmark harness runs end to end on a few requests (numbers are not judged here)."""

import json
import subprocess
import sys

from conftest import DATA, MODEL_REPO, ROOT


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
