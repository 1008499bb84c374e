# Two images. The base images are build arguments, so a machine without registry access can
# pass local ones (tests/test_container.py builds `serve` with podman on a debootstrap base).
#
#   docker build --target serve  -t rankstill:serve  .   # FastAPI + ONNX Runtime in-process, no torch
#   docker build --target triton -t rankstill:triton .   # Triton (native onnxruntime backend) + FastAPI front
#   docker run --rm -p 127.0.0.1:8000:8000 rankstill:serve
#
# serve:  port 8000 (/rerank, /v2/rerank, /readyz, /metrics, /docs)
# triton: port 8000 is the FastAPI front; Triton listens on 127.0.0.1 inside the container
#         (HTTP 8010, gRPC 8001, metrics 8002; publish 8002 to scrape Triton's own metrics).

ARG PYTHON_IMAGE=python:3.11-slim
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# Everything `pip install .` needs: pyproject.toml, the README it names, and every package
# directory it maps ([tool.setuptools.package-dir]).
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY rankstill /src/rankstill
COPY server /src/server
COPY export /src/export
COPY distill /src/distill
COPY benchmarks /src/benchmarks

FROM ${PYTHON_IMAGE} AS serve
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# The dependencies first, read from pyproject.toml (`dependencies` + the `serve` extra): this
# layer stays cached while only the code changes.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; \
print('\n'.join(r for r in p['dependencies'] + p['optional-dependencies']['serve'] if not r.startswith('rankstill')))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/pyproject.toml /tmp/requirements.txt
# Then the package itself. It is installed from /tmp/src, which is removed, so that nothing in
# the working directory shadows the installed `rankstill`.
COPY --from=source /src /tmp/src
RUN cd /tmp/src && pip install --no-cache-dir ".[serve]" && cd / && rm -rf /tmp/src
WORKDIR /app
COPY model_repo ./model_repo
EXPOSE 8000
CMD ["rankstill", "serve", "--host", "0.0.0.0", "--port", "8000", "--model-repo", "/app/model_repo"]

# The official Triton image has the native ONNX Runtime backend: model_repo/ is served as it is.
FROM ${TRITON_IMAGE} AS triton
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=source /src /tmp/src
RUN cd /tmp/src && pip install --no-cache-dir ".[triton]" && cd / && rm -rf /tmp/src
WORKDIR /app
COPY model_repo ./model_repo
EXPOSE 8000 8002
# Two processes: Triton serving the repository, and the FastAPI front sending it tokenized batches.
CMD ["bash", "-c", "tritonserver --model-repository=/app/model_repo --model-control-mode=explicit --load-model='*' --http-address=127.0.0.1 --http-port=8010 --grpc-address=127.0.0.1 --grpc-port=8001 --metrics-port=8002 & exec rankstill serve --host 0.0.0.0 --port 8000 --model-repo /app/model_repo --backend triton --triton-url 127.0.0.1:8001"]
