# Two images (neither can be built on the development machines here: no Docker engine runs there).
#
#   docker build --target serve  -t rankstill:serve  .   # FastAPI + ONNX Runtime in-process, no torch
#   docker build --target triton -t rankstill:triton .   # Triton (native onnxruntime backend) + FastAPI front
#
# serve:  port 8000 (/rerank, /v2/rerank, /metrics, /docs)
# triton: port 8000 is the FastAPI front; Triton listens on 127.0.0.1 inside the container
#         (HTTP 8010, gRPC 8001, metrics 8002; publish 8002 to scrape Triton's own metrics).

FROM scratch AS source
COPY pyproject.toml README.md /app/
COPY rankstill /app/rankstill
COPY server /app/server
COPY export /app/export
COPY distill /app/distill

FROM python:3.11-slim AS serve
WORKDIR /app
COPY --from=source /app /app
RUN pip install --no-cache-dir ".[serve]"
COPY model_repo ./model_repo
EXPOSE 8000
CMD ["rankstill", "serve", "--host", "0.0.0.0", "--port", "8000", "--model-repo", "/app/model_repo"]

# The official Triton image has the native ONNX Runtime backend: model_repo/ is served as it is.
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS triton
WORKDIR /app
COPY --from=source /app /app
RUN pip install --no-cache-dir ".[triton]"
COPY model_repo ./model_repo
EXPOSE 8000 8002
# Two processes: Triton serving the repository, and the FastAPI front sending it tokenized batches.
CMD ["bash", "-c", "tritonserver --model-repository=/app/model_repo --model-control-mode=explicit --load-model='*' --http-address=127.0.0.1 --http-port=8010 --grpc-address=127.0.0.1 --grpc-port=8001 --metrics-port=8002 & exec rankstill serve --host 0.0.0.0 --port 8000 --model-repo /app/model_repo --backend triton --triton-url 127.0.0.1:8001"]
