"""The peer most users write first: sentence-transformers `CrossEncoder` behind a plain FastAPI endpoint.

    python -m rankstill.benchmarks.crossencoder_server --model runs/student --port 8100
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Request(BaseModel):
    query: str
    documents: list[str]


def build(model_dir: str, max_length: int) -> FastAPI:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(model_dir, device="cpu", max_length=max_length)
    app = FastAPI()

    @app.get("/readyz")
    def ready():
        return {"status": "ready"}

    @app.post("/rerank")
    def rerank(request: Request):  # a plain `def`: FastAPI runs it in its thread pool
        scores = model.predict([(request.query, d) for d in request.documents], batch_size=len(request.documents))
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return {"results": [{"index": i, "relevance_score": float(scores[i])} for i in order]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="A BertForSequenceClassification directory with its tokenizer.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    uvicorn.run(build(args.model, args.max_length), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
