"""A stand-in teacher server for shadow tests and benchmarks: answers the TEI rerank shape slowly, or fails.

    python benchmarks/slow_teacher.py --port P [--delay SECONDS] [--fail]
"""

import argparse
import asyncio

import uvicorn
from fastapi import FastAPI, HTTPException


def build(delay: float, fail: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    async def ready():
        return {"status": "ready"}

    @app.post("/rerank")
    async def rerank(body: dict):
        await asyncio.sleep(delay)
        if fail:
            raise HTTPException(500, "teacher broke")
        # Scores the length of each text: a fixed, known teacher.
        scores = [float(len(text)) for text in body["texts"]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [{"index": i, "score": scores[i]} for i in order]

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    uvicorn.run(build(args.delay, args.fail), host="127.0.0.1", port=args.port, log_level="warning")
