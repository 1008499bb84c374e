"""Peers in the same run, on the same payloads: rankstill, a plain CrossEncoder server, the teacher, Infinity.

Each peer is a real server on 127.0.0.1 answering `POST /rerank` with `{query, documents}`. They all
run at once and are timed in turns, part of the payloads each, so that the machine's slow spells weigh
on every peer alike. A peer that cannot start here is reported with the reason, never silently left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rankstill.local_server import free_port, http_ok, running_server, stop_process, wait_until_ready

from .latency import rerank_bodies, time_in_turns

PEER_TURNS = 4  # each concurrency's payloads go to the peers in this many rounds


@dataclass
class Peer:
    name: str
    describe: str
    command: list[str] | None  # None: a rankstill server (started with running_server)
    rankstill_args: tuple[str, ...] = ()
    ready_path: str = "/readyz"
    unavailable: str | None = None  # why this peer cannot run here


def peers(student_checkpoint: Path | None, teacher_repo: Path | None, infinity_bin: Path | None,
          model_repo: Path, fp32_model: str) -> list[Peer]:
    found = [Peer("rankstill", "rankstill serve (ONNX Runtime, micro-batching), the served default (int8 where it passed the gate)",
                  None, ("--model-repo", str(model_repo))),
             Peer("rankstill-fp32", "rankstill serve on the fp32 student: the same weights as the CrossEncoder and Infinity peers",
                  None, ("--model-repo", str(model_repo), "--model", fp32_model))]
    crossencoder = [sys.executable, "-m", "rankstill.benchmarks.crossencoder_server", "--model", str(student_checkpoint)]
    found.append(Peer("crossencoder", "sentence-transformers CrossEncoder behind a plain FastAPI endpoint, same student (PyTorch)",
                      crossencoder if student_checkpoint and student_checkpoint.is_dir() else None,
                      unavailable=None if student_checkpoint and student_checkpoint.is_dir()
                      else f"student checkpoint {student_checkpoint} not found"))
    found.append(Peer("teacher", "rankstill serve on the teacher exported to ONNX", None, ("--model-repo", str(teacher_repo)),
                      unavailable=None if teacher_repo and teacher_repo.is_dir()
                      else f"teacher repository {teacher_repo} not found (run `rankstill teacher export`)"))
    if infinity_bin and infinity_bin.is_file():
        found.append(Peer("infinity", "Infinity (infinity-emb, torch engine) on the same student checkpoint",
                          [str(infinity_bin), "v2", "--model-id", str(student_checkpoint), "--engine", "torch",
                           "--device", "cpu", "--host", "127.0.0.1"], ready_path="/health"))
    else:
        found.append(Peer("infinity", "Infinity", None, unavailable=f"no infinity_emb at {infinity_bin} "
                                                                   "(see shared PEERS.md for its own virtualenv)"))
    return found


@contextlib.contextmanager
def started(peer: Peer):
    if peer.command is None:
        with running_server(*peer.rankstill_args) as url:
            yield url
        return
    port = free_port()
    command = peer.command + ["--port", str(port)]
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(lambda: http_ok(url + peer.ready_path), process, 180, peer.name)
        except (RuntimeError, TimeoutError) as error:
            log.seek(0)
            raise RuntimeError(f"{error}: {log.read().decode(errors='replace')[-600:]}") from None
        yield url
    finally:
        stop_process(process)


def run_peers(peer_list: list[Peer], payloads, concurrencies: list[int], warm_passes: int = 1,
              turns: int = PEER_TURNS, echo=print) -> dict:
    """Every peer that starts is served at once and timed in turns with the others (`time_in_turns`)."""
    results = {}
    with contextlib.ExitStack() as stack:
        urls = {}
        for peer in peer_list:
            results[peer.name] = {"describe": peer.describe}
            if peer.unavailable:
                results[peer.name]["unavailable"] = peer.unavailable
                echo(f"{peer.name}: not run ({peer.unavailable})")
                continue
            try:
                urls[peer.name] = stack.enter_context(started(peer))
            except Exception as error:  # a peer failing to start is a finding, not a crash of the suite
                results[peer.name]["unavailable"] = f"{type(error).__name__}: {error}"
                echo(f"{peer.name}: not run ({results[peer.name]['unavailable']})")
        bodies = rerank_bodies(payloads, None)
        for c in concurrencies:
            timed = asyncio.run(time_in_turns(urls, "/rerank", bodies, c, warm_passes, turns))
            for name, r in timed.items():
                if "failed" in r:  # a peer failing under load is a finding too; the others go on
                    results[name]["unavailable"] = f"failed at concurrency {c}: {r['failed']}"
                    echo(f"{name}: {results[name]['unavailable']}")
                    del urls[name]
                    continue
                results[name].setdefault("concurrency", {})[str(c)] = r
                echo(f"{name} c={c}: p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['requests_per_s']:.1f} req/s")
    rankstill = results.get("rankstill", {}).get("concurrency", {})
    for name, result in results.items():
        if name != "rankstill" and "concurrency" in result:
            result["rankstill_p99_advantage"] = {c: r["p99_ms"] / rankstill[c]["p99_ms"]
                                                 for c, r in result["concurrency"].items() if c in rankstill}
    return results


def infinity_default() -> Path | None:
    found = shutil.which("infinity_emb")
    return Path(found) if found else Path(".venv-infinity/bin/infinity_emb")
