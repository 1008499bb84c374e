"""`rankstill triton`: run a real Triton Inference Server on `model_repo/`.

The server binary is the one inside the `nvidia-pytriton` wheel (Triton 2.51, python backend
only), installed in a virtualenv of its own because its python stub needs numpy<2. For each
model of the repository a runtime folder gets the same config.pbtxt with the native
`onnxruntime_onnx` platform swapped for the python backend, whose model.py runs ONNX Runtime
on the very same `model.onnx` (linked, never copied into `model_repo/`). On a full Triton
build (the NGC image) `model_repo/` is served as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from rankstill.local_server import free_port, http_ok, wait_until_ready
from rankstill.model_repo import MODEL_FILE, list_models

PYTHON_MODEL = Path(__file__).with_name("onnx_python_model.py")
DEFAULT_TRITON_PYTHON = Path(".venv-triton/bin/python")


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel's server, backends and stubs lie, found through its own interpreter."""

    python: Path  # the Triton virtualenv's interpreter (numpy<2, onnxruntime)
    package: Path  # <site-packages>/pytriton

    @classmethod
    def find(cls, python: Path) -> "TritonInstall":
        if not python.exists():
            raise FileNotFoundError(
                f"{python} not found: create the Triton virtualenv with `make triton-env` "
                "(nvidia-pytriton, numpy<2, onnxruntime)")
        code = "import os, pytriton; print(os.path.dirname(pytriton.__file__))"
        package = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
        return cls(python, Path(package.stdout.strip()))

    @property
    def server_binary(self) -> Path:
        return self.package / "tritonserver" / "bin" / "tritonserver"

    def environment(self) -> dict[str, str]:
        # The stub links libcudart from the wheel's bundled libs and libpython from the
        # interpreter's LIBDIR, and must find the virtualenv's python first on PATH.
        python_libdir = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            check=True, capture_output=True, text=True).stdout.strip()
        libraries = [str(self.package.parent / "nvidia_pytriton.libs"), python_libdir]
        if os.environ.get("LD_LIBRARY_PATH"):
            libraries.append(os.environ["LD_LIBRARY_PATH"])
        return {**os.environ, "LD_LIBRARY_PATH": ":".join(libraries),
                "PATH": f"{self.python.parent}:{os.environ.get('PATH', '')}"}

    def stub_version(self) -> str:
        return subprocess.run([str(self.python), "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                              check=True, capture_output=True, text=True).stdout.strip()


def python_backend_config(native_config: str, threads: int) -> str:
    """The native ONNX Runtime config with the python backend swapped in."""
    config = re.sub(r'^platform: "onnxruntime_onnx"$', 'backend: "python"', native_config, flags=re.M)
    return config + f'parameters: {{ key: "intra_op_threads" value: {{ string_value: "{threads}" }} }}\n'


def prepare_runtime(model_repo: Path, workdir: Path, install: TritonInstall, threads: int) -> list[str]:
    """Lay out backends and python-backend models under `workdir`; returns the model names."""
    backends = workdir / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(install.package / "tritonserver" / "backends", backends)
    stub = install.package / "tritonserver" / "python_backend_stubs" / install.stub_version() / "triton_python_backend_stub"
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")

    models = workdir / "models"
    if models.exists():
        shutil.rmtree(models)
    names = []
    for entry in list_models(model_repo):  # rerankers and recommenders alike
        target = models / entry.name
        target.mkdir(parents=True)
        native = (entry.directory / "config.pbtxt").read_text()
        (target / "config.pbtxt").write_text(python_backend_config(native, threads))
        for version_dir in entry.directory.iterdir():
            if version_dir.name.isdigit() and (version_dir / MODEL_FILE).is_file():
                (target / version_dir.name).mkdir()
                (target / version_dir.name / MODEL_FILE).symlink_to((version_dir / MODEL_FILE).resolve())
                shutil.copy2(PYTHON_MODEL, target / version_dir.name / "model.py")
        names.append(entry.name)
    return names


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def pick(cls, http: int | None = None, grpc: int | None = None, metrics: int | None = None) -> "TritonPorts":
        return cls(http or free_port(), grpc or free_port(), metrics or free_port())


@dataclass(frozen=True)
class RunningTriton:
    ports: TritonPorts
    models: list[str]
    process: subprocess.Popen

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.metrics}/metrics"


def _ready(http_url: str, models: list[str]) -> bool:
    paths = ["/v2/health/ready", *[f"/v2/models/{name}/ready" for name in models]]
    return all(http_ok(http_url + path) for path in paths)


@contextlib.contextmanager
def running_triton(model_repo: Path, workdir: Path, python: Path, ports: TritonPorts | None = None,
                   threads: int = 0, timeout: float = 120.0, log_verbose: int = 0):
    """Start Triton on 127.0.0.1 serving every model of `model_repo`, wait until they are ready,
    yield a `RunningTriton`, and stop it (SIGINT, then kill) on exit."""
    install = TritonInstall.find(python)
    models = prepare_runtime(Path(model_repo), Path(workdir), install, threads)
    ports = ports or TritonPorts.pick()
    command = [
        str(install.server_binary),
        f"--model-repository={Path(workdir) / 'models'}",
        f"--backend-directory={Path(workdir) / 'backends'}",
        "--model-control-mode=explicit", *[f"--load-model={name}" for name in models],
        "--http-address=127.0.0.1", f"--http-port={ports.http}",
        "--grpc-address=127.0.0.1", f"--grpc-port={ports.grpc}",
        "--metrics-address=127.0.0.1", f"--metrics-port={ports.metrics}",
        "--allow-gpu-metrics=false", f"--log-verbose={log_verbose}", "--exit-timeout-secs=10",
    ]
    process = subprocess.Popen(command, env=install.environment())
    http_url = f"http://127.0.0.1:{ports.http}"
    try:
        wait_until_ready(lambda: _ready(http_url, models), process, timeout, f"Triton with models {models}")
        yield RunningTriton(ports, models, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
