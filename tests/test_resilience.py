"""A real server (uvicorn on 127.0.0.1) under hostile or unlucky clients: silent and slow sockets,
signals, hot reload under load. Each test bounds its own load and time."""

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx

from rankstill.local_server import free_port, http_ok, wait_until_ready

from conftest import FP32_MODEL, MODEL_REPO, ROOT, running_server

QUERY = "cordless drill"
DOCUMENTS = ["DEWALT 20-Volt Max Lithium-Ion Cordless Drill/Driver Kit", "Delta Bathroom Faucet in Chrome",
             "Milwaukee M18 Cordless Hammer Drill (Tool Only)", "1/2 in. Drill Bit Set (15-Piece)"]


def silent_sockets(url: str, count: int) -> list[socket.socket]:
    port = int(url.rsplit(":", 1)[1])
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1024) is not None  # b"" (closed) or a 408 before closing
    except (TimeoutError, socket.timeout):
        return False
    except OSError:
        return True


def test_silent_and_slow_sockets_are_closed_and_others_are_answered_meanwhile():
    with running_server("--model-repo", str(MODEL_REPO), "--request-timeout", "2") as url:
        silent = silent_sockets(url, 300)
        slow = silent_sockets(url, 1)[0]  # promises 1000 bytes, sends 10
        slow.sendall(b"POST /rerank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1000\r\n\r\n{\"query\": ")
        began = time.monotonic()
        answered = [httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=10).status_code
                    for _ in range(5)]
        assert answered == [200] * 5
        time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))
        assert all(closed_by_server(sock) for sock in silent)
        slow.settimeout(2)
        assert slow.recv(1024).startswith(b"HTTP/1.1 408")
        assert httpx.get(f"{url}/healthz").status_code == 200
        for sock in silent + [slow]:
            sock.close()


def test_connections_beyond_the_cap_are_closed_at_once():
    with running_server("--model-repo", str(MODEL_REPO), "--max-connections", "20", "--request-timeout", "30") as url:
        held = silent_sockets(url, 20)
        extra = silent_sockets(url, 5)
        time.sleep(0.3)
        assert all(closed_by_server(sock) for sock in extra)
        assert not any(closed_by_server(sock) for sock in held[:5])
        for sock in held + extra:
            sock.close()
        time.sleep(0.3)
        assert httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}).status_code == 200


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "rankstill.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                "--log-level", "warning", *args], cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(lambda: http_ok(f"{url}/readyz"), process, 60, "server")
    return process, url


def test_sigterm_answers_accepted_requests_and_exits_within_the_deadline_whatever_clients_do():
    process, url = start_server("--model-repo", str(MODEL_REPO), "--shutdown-timeout", "5", "--request-timeout", "60")
    try:
        dribbler = silent_sockets(url, 1)[0]  # an upload at one byte per second that would never end
        dribbler.sendall(b"POST /rerank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n")
        stop_dribbling = threading.Event()

        def dribble():
            while not stop_dribbling.wait(1.0):
                try:
                    dribbler.sendall(b" ")
                except OSError:
                    return
        threading.Thread(target=dribble, daemon=True).start()

        async def in_flight():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                requests = [asyncio.create_task(client.post("/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS * 50}))
                            for i in range(8)]
                await asyncio.sleep(0.3)  # all sent and accepted
                began = time.monotonic()
                process.send_signal(signal.SIGTERM)
                return await asyncio.gather(*requests, return_exceptions=True), began

        responses, began = asyncio.run(in_flight())
        process.wait(timeout=20)
        exited_after = time.monotonic() - began
        stop_dribbling.set()
    finally:
        if process.poll() is None:
            process.kill()
    assert [getattr(r, "status_code", r) for r in responses] == [200] * 8
    assert exited_after <= 5 + 2  # the deadline, plus the interpreter's exit


def load_until(url: str, stop: threading.Event, codes: list, errors: list) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            try:
                codes.append(client.post("/rerank", json={"query": f"{QUERY} {i}", "texts": DOCUMENTS * 10}).status_code)
            except httpx.HTTPError as error:
                errors.append(repr(error))
            i += 1


def under_load(url: str, action, clients: int = 4, seconds: float = 3.0):
    stop, codes, errors = threading.Event(), [], []
    threads = [threading.Thread(target=load_until, args=(url, stop, codes, errors)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    result = action()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(30)
    return result, codes, errors


def test_hot_reload_under_load_loses_no_request(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(MODEL_REPO, repo)
    name = FP32_MODEL
    with running_server("--model-repo", str(repo), "--reload-interval", "0.5") as url:
        def new_version():  # copied in under a temporary name, then renamed: how a deployment should publish
            staging = repo / name / ".incoming"
            staging.mkdir()
            shutil.copyfile(MODEL_REPO / f"{name}-int8" / "1" / "model.onnx", staging / "model.onnx")
            staging.rename(repo / name / "2")

        _, codes, errors = under_load(url, new_version)
        info = httpx.get(f"{url}/info").json()
    assert errors == [] and codes and set(codes) == {200}
    assert info["models"][name]["version"] == 2


def test_sighup_reloads_instead_of_killing_the_server(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(MODEL_REPO, repo)
    name = FP32_MODEL
    process, url = start_server("--model-repo", str(repo), "--reload-interval", "0")
    try:
        (repo / name / "2").mkdir()
        shutil.copyfile(MODEL_REPO / name / "1" / "model.onnx", repo / name / "2" / "model.onnx")
        _, codes, errors = under_load(url, lambda: process.send_signal(signal.SIGHUP), clients=3, seconds=2.0)
        version = httpx.get(f"{url}/info").json()["models"][name]["version"]
        alive = process.poll() is None
    finally:
        process.terminate()
        process.wait(30)
    assert alive and errors == [] and set(codes) == {200}
    assert version == 2
