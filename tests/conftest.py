from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "homedepot" / "pairs.csv.gz"
MODEL_REPO = ROOT / "model_repo"


@pytest.fixture(scope="session")
def data_path() -> Path:
    assert DATA.is_file(), f"tests need the shared data at {DATA} (see shared/DATA.md)"
    return DATA


@pytest.fixture(scope="session")
def judgments(data_path):
    from rankstill.distill.data import load_judgments

    return load_judgments(data_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(*args: str, timeout: float = 60.0):
    """A real `rankstill serve` process on 127.0.0.1; yields its base URL, then stops it."""
    port = free_port()
    command = [sys.executable, "-m", "rankstill.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"server exited with {process.returncode}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
