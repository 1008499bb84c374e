"""Start a real `rankstill serve` process on 127.0.0.1 for tests and benchmarks, and stop it."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(is_ready, process: subprocess.Popen, timeout: float, what: str) -> None:
    """Poll `is_ready()` until it holds; fail early if `process` exits, or after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not is_ready():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.2)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running_server(*args: str, cwd: str | Path | None = None, timeout: float = 60.0,
                   wait_for: str = "/readyz"):
    """Yield the base URL of a fresh server started with `rankstill serve ARGS` once `wait_for`
    answers 200 (use /healthz for a server that is not meant to become ready); stop it after."""
    port = free_port()
    command = [sys.executable, "-m", "rankstill.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(command, cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(lambda: http_ok(url + wait_for), process, timeout, f"server at {url}")
        yield url
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    """Terminate, and kill if it has not exited after `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
