"""The `serve` image of the Dockerfile, built with podman and run for real.

No base image can be pulled from a registry on the project's machines (../shared/CONTAINERS.md),
so the test makes its own: `localhost/debian-minbase:bookworm` by debootstrap from the Debian
mirror apt already uses, then a Python 3.11 base on it (tests/container/python-base.Containerfile,
a stand-in for python:3.11-slim), passed to the Dockerfile as `PYTHON_IMAGE`. Both bases are kept
between runs, as are podman's build layers, so a rerun rebuilds only what changed.

Needs root, podman, runc and debootstrap (`apt-get install -y podman runc debootstrap`); without
podman it is skipped, or fails where CI is set. Build times and image sizes go to
bench-results/container.json (and stdout, with -s).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent / "container"
SUITE = "bookworm"
DEBIAN_IMAGE = f"localhost/debian-minbase:{SUITE}"
PYTHON_IMAGE = f"localhost/rankstill-python:3.11-{SUITE}"
SERVE_IMAGE = "localhost/rankstill:serve-test"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RESULTS = ROOT / "bench-results" / "container.json"
READY_TIMEOUT_S = 120

# runc and ulimits podman may set on these machines, unless the caller points podman elsewhere.
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(HERE / "containers.conf"))}

QUERY = "cordless drill"
DOCUMENTS = ["DEWALT 20V cordless drill kit", "bathroom faucet"]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str):
    """Skip on a development machine; fail in CI, which must have installed the tools."""
    if in_ci():
        pytest.fail(f"{reason}: CI must run `apt-get install -y podman runc debootstrap` first")
    pytest.skip(reason)


def run(args: list[str], *, timeout: float, env: dict | None = None, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        pytest.fail(f"`{' '.join(args)}` exited with {result.returncode}:\n{output}")
    return result


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return run(["podman", *args], timeout=timeout, env=PODMAN_ENV, check=check)


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def image_bytes(name: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout.strip())


def debian_mirror() -> str:
    """The mirror apt uses for SUITE (one-line or deb822 sources), else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if ("deb" in fields.get("types", []) and SUITE in fields.get("suites", [])
                        and "main" in fields.get("components", [])):
                    uris = [u for u in fields.get("uris", []) if u.startswith(("http://", "https://"))]
                    if uris:
                        return uris[0]
        else:
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(https?://\S+)\s+(\S+)\s+(.*)", line.split("#")[0])
                if match and match.group(2) == SUITE and "main" in match.group(3).split():
                    return match.group(1)
    return "http://deb.debian.org/debian"


def build_debian_base() -> float | None:
    """debootstrap --variant=minbase, imported as DEBIAN_IMAGE; None when it already exists."""
    if image_exists(DEBIAN_IMAGE):
        return None
    if shutil.which("debootstrap") is None:
        unavailable(f"debootstrap is not installed and there is no {DEBIAN_IMAGE} to reuse")
    if os.geteuid() != 0:
        unavailable("debootstrap needs root to build the local Debian base")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="debian-minbase-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        mirror = debian_mirror()
        # apt in the image reaches an https mirror only with CA certificates of its own.
        include = ["--include=ca-certificates"] if mirror.startswith("https://") else []
        run(["debootstrap", "--variant=minbase", *include, SUITE, str(rootfs), mirror], timeout=600)
        for leftovers in (rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"):
            for item in leftovers.glob("*"):
                if item.is_file():
                    item.unlink()
        run(["bash", "-o", "pipefail", "-c", f'tar -C "{rootfs}" -c . | podman import - {DEBIAN_IMAGE}'],
            timeout=300, env=PODMAN_ENV)
    return time.perf_counter() - start


def build(tag: str, containerfile: Path, context: Path, *extra: str) -> float:
    start = time.perf_counter()
    podman("build", "--layers", "-t", tag, "-f", str(containerfile), *extra, str(context), timeout=600)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record(update: dict) -> dict:
    RESULTS.parent.mkdir(exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results.update(update)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


@pytest.fixture(scope="module")
def serve_image() -> str:
    if shutil.which("podman") is None:
        unavailable("podman is not installed")
    debian_s = build_debian_base()
    python_s = build(PYTHON_IMAGE, HERE / "python-base.Containerfile", HERE,
                     "--build-arg", f"DEBIAN_IMAGE={DEBIAN_IMAGE}")
    serve_s = build(SERVE_IMAGE, ROOT / "Dockerfile", ROOT, "--target", "serve",
                    "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}",
                    # pip inside the build verifies TLS against the host's CA bundle.
                    "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro")
    results = record({
        "podman": podman("--version").stdout.strip(),
        "debian_base_build_s": None if debian_s is None else round(debian_s, 1),  # None: reused
        "python_base_build_s": round(python_s, 1),
        "serve_build_s": round(serve_s, 1),
        "python_base_bytes": image_bytes(PYTHON_IMAGE),
        "serve_image_bytes": image_bytes(SERVE_IMAGE),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    print(f"\ncontainer: {json.dumps(results)}")
    return SERVE_IMAGE


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_serve_image_answers_readyz_and_rerank(serve_image):
    port = free_port()
    name = f"rankstill-serve-test-{os.getpid()}"
    podman("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", serve_image)
    base = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", f"the container is {state}:\n{podman('logs', name).stderr[-4000:]}"
            assert time.perf_counter() - start < READY_TIMEOUT_S, \
                f"/readyz not ready after {READY_TIMEOUT_S} s:\n{podman('logs', name).stderr[-4000:]}"
            time.sleep(1)
        ready_s = time.perf_counter() - start
        record({"ready_s": round(ready_s, 1)})
        print(f"container: /readyz after {ready_s:.1f} s")

        body = post_json(f"{base}/rerank", {"query": QUERY, "documents": DOCUMENTS})
        results = body["results"]
        assert [r["index"] for r in results] == [0, 1], body
        assert 0 < results[0]["relevance_score"] < 1, body
        assert results[0]["relevance_score"] > results[1]["relevance_score"], body
    finally:
        podman("rm", "-f", name, check=False)


def test_serve_image_has_onnxruntime_and_the_package_but_no_torch(serve_image):
    no_torch = podman("run", "--rm", "--network", "none", serve_image, "python", "-c", "import torch",
                      check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr

    check = ("import importlib.util, onnxruntime, rankstill; "
             "missing = [m for m in ('rankstill.server', 'rankstill.export', 'rankstill.distill', "
             "'rankstill.benchmarks') if importlib.util.find_spec(m) is None]; "
             "assert not missing, missing; "
             "assert '/site-packages/' in rankstill.__file__, rankstill.__file__; "
             "print(onnxruntime.__version__)")
    podman("run", "--rm", "--network", "none", serve_image, "python", "-c", check)
