# Serving image: ONNX Runtime in-process, the committed students, no torch.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY rankstill ./rankstill
COPY server ./server
COPY export ./export
COPY distill ./distill
RUN pip install --no-cache-dir ".[serve]"
COPY model_repo ./model_repo
EXPOSE 8000
CMD ["rankstill", "serve", "--host", "0.0.0.0", "--port", "8000", "--model-repo", "/app/model_repo"]
