"""Where a `/rerank` request's time goes: py-spy samples a real server under load (concurrency 1 by
default), and each sample is charged to the first category found on its stack (innermost frame first).

    python -m rankstill.benchmarks.profile_server --seconds 30 --concurrency 8   # needs `pip install py-spy`
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

from rankstill.local_server import running_server

from .latency import build_payloads

# (category, substrings of a frame "function (file)"); checked innermost frame first.
CATEGORIES = [
    ("model: onnxruntime run", ("onnxruntime",)),
    ("padding and batch assembly", ("pad (", "chunks (", "_best_groups (", "prepare (", "concat (", "batcher.py")),
    ("tokenize: tokenizers + pair assembly", ("tokenizers", "pair_tokenizer.py")),
    ("JSON and validation", ("json", "pydantic", "fastapi/encoders", "fastapi/routing", "dialects.py")),
    ("HTTP and event loop", ("uvicorn", "h11", "httptools", "starlette", "asyncio", "anyio", "selectors")),
]


def categorize(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for category, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return category
    return "other"


def profile(model_repo: Path, data: Path, seconds: int, candidates: int, concurrency: int = 1) -> dict:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    payloads = build_payloads(data, 100, candidates)
    with running_server("--model-repo", str(model_repo)) as url, tempfile.TemporaryDirectory() as scratch:
        pid = _server_pid(url)
        stop = threading.Event()

        def load(first: int):
            with httpx.Client(base_url=url, timeout=60) as client:
                i = first
                while not stop.is_set():
                    query, documents = payloads[i % len(payloads)]
                    client.post("/rerank", json={"query": query, "documents": documents, "return_documents": False})
                    i += 1

        users = [threading.Thread(target=load, args=(user * 7,)) for user in range(concurrency)]
        for user in users:
            user.start()
        time.sleep(2)  # warm: the documents' tokens are cached as in steady state
        raw = Path(scratch) / "profile.txt"
        subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw",
                        "--output", str(raw), "--threads", "--nonblocking"], check=True, capture_output=True)
        stop.set()
        for user in users:
            user.join()
        counts = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            counts[categorize(stack)] += int(count)
    total = sum(counts.values())
    return {"samples": total, "seconds": seconds, "candidates": candidates, "concurrency": concurrency,
            "share": {name: round(count / total, 3) for name, count in counts.most_common()}}


def _server_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(["pgrep", "-f", "--", f"serve .*--port {port}"], capture_output=True, text=True).stdout.split()
    return int(out[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repo", type=Path, default=Path("model_repo"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/homedepot/pairs.csv.gz"))
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=1, help="Users sending requests back to back.")
    args = parser.parse_args()
    print(json.dumps(profile(args.model_repo, args.data, args.seconds, args.candidates, args.concurrency), indent=2))


if __name__ == "__main__":
    main()
