"""A real Triton server (from the nvidia-pytriton wheel) serving model_repo/, with FastAPI in front."""

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from rankstill.local_server import free_port
from rankstill.server.backend import length_buckets
from rankstill.server.triton.launcher import python_backend_config, running_triton

from conftest import FP32_MODEL, INT8_BATCH_TOLERANCE, INT8_MODEL, MODEL_REPO, ROOT, running_server

TRITON_PYTHON = ROOT / ".venv-triton" / "bin" / "python"
QUERY = "outdoor led flood light"
DOCUMENTS = ["Lithonia Lighting LED Outdoor Flood Light", "Delta Kitchen Faucet", "Halo 6 in. LED Recessed Trim",
             "Defiant 180 Degree Outdoor White Motion Sensing Security Light", "2 in. x 4 in. x 8 ft. Stud"]


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    assert TRITON_PYTHON.exists(), "run `make triton-env` first (make test does)"
    with running_triton(MODEL_REPO, tmp_path_factory.mktemp("triton"), TRITON_PYTHON) as server:
        yield server


def test_python_backend_config_keeps_batching_and_swaps_the_platform():
    native = (MODEL_REPO / FP32_MODEL / "config.pbtxt").read_text()
    config = python_backend_config(native, threads=2)
    assert 'backend: "python"' in config and "onnxruntime_onnx" not in config
    assert "dynamic_batching" in config and re.search(r"max_batch_size: \d+", config)
    assert 'key: "intra_op_threads" value: { string_value: "2" }' in config


def test_length_buckets():
    assert length_buckets(64) == [16, 32, 48, 64]
    assert length_buckets(40) == [16, 32, 40]


def test_rerank_through_triton_matches_embedded(triton):
    body = {"query": QUERY, "texts": DOCUMENTS * 4, "raw_scores": True}
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL, "--backend", "triton",
                        "--triton-url", triton.grpc_url) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        via_triton = httpx.post(f"{url}/rerank", json=body).json()
        int8_name = INT8_MODEL
        int8 = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": int8_name})
    # one lane, as Triton runs each batch: int8 scores depend on what they are batched with
    with running_server("--model-repo", str(MODEL_REPO), "--model", FP32_MODEL, "--lanes", "1") as url:
        embedded = httpx.post(f"{url}/rerank", json=body).json()
        int8_embedded = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS, "model": int8_name})
    assert [r["index"] for r in via_triton] == [r["index"] for r in embedded]
    np.testing.assert_allclose([r["score"] for r in via_triton], [r["score"] for r in embedded], atol=1e-5)
    assert int8.status_code == 200 and int8.json()["model"] == int8_name
    np.testing.assert_allclose([r["relevance_score"] for r in int8.json()["results"]],
                               [r["relevance_score"] for r in int8_embedded.json()["results"]],
                               atol=INT8_BATCH_TOLERANCE)


def _metric(text: str, name: str, model: str) -> float:
    pattern = rf'^{name}{{[^}}]*model="{re.escape(model)}"[^}}]*}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def test_triton_dynamic_batching_merges_same_shape_requests(triton):
    model = FP32_MODEL
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    ids = np.random.default_rng(0).integers(1000, 5000, size=(8, 32)).astype(np.int64)

    def infer(_):
        inputs = []
        for name, value in (("input_ids", ids), ("attention_mask", np.ones_like(ids)), ("token_type_ids", np.zeros_like(ids))):
            tensor = grpcclient.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return client.infer(model, inputs).as_numpy("scores")

    before = httpx.get(triton.metrics_url).text
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(infer, range(64)))
    after = httpx.get(triton.metrics_url).text
    assert all(np.allclose(r, results[0], atol=1e-5) for r in results)
    requests = _metric(after, "nv_inference_request_success", model) - _metric(before, "nv_inference_request_success", model)
    executions = _metric(after, "nv_inference_exec_count", model) - _metric(before, "nv_inference_exec_count", model)
    assert requests == 64
    assert executions < requests  # several requests ran as one batch


def test_triton_down_gives_clear_503_not_a_hang():
    dead = f"127.0.0.1:{free_port()}"
    with running_server("--model-repo", str(MODEL_REPO), "--backend", "triton", "--triton-url", dead,
                        "--triton-timeout", "2", wait_for="/healthz") as url:
        assert httpx.get(f"{url}/readyz").status_code == 503
        began = time.monotonic()
        response = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=30)
        assert time.monotonic() - began < 15
    assert response.status_code in (503, 504)
    assert "Triton" in response.json()["detail"]


def test_triton_that_never_answers_gives_504_within_the_timeout():
    # A socket that accepts connections but never speaks gRPC: every call runs into its deadline.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url_of_silent = f"127.0.0.1:{silent.getsockname()[1]}"
        with running_server("--model-repo", str(MODEL_REPO), "--backend", "triton", "--triton-url", url_of_silent,
                            "--triton-timeout", "1", wait_for="/healthz") as url:
            began = time.monotonic()
            response = httpx.post(f"{url}/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=30)
            elapsed = time.monotonic() - began
    assert response.status_code == 504, response.text
    assert "did not answer" in response.json()["detail"]
    assert elapsed < 10
