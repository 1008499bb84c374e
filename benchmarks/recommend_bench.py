"""`/recommend` latency in `rankstill bench`: real MovieLens histories (each user's most recent items,
oldest first, cut to the model's window), over HTTP at a given concurrency, beside the floor (the
recommender's ONNX model run directly on the same histories)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rankstill.model_repo import load_model
from rankstill.server.recommend import OnnxRecommendRunner, Recommender

from .latency import check_status, load_client, percentiles, post

RATINGS_FILE = "MovieLens100k_data.parquet.brotli"


def histories(movielens: Path, window: int, count: int) -> list[list[int]]:
    ratings = pd.read_parquet(Path(movielens) / RATINGS_FILE).sort_values(["user_id", "timestamp"], kind="stable")
    recent = ratings.groupby("user_id", sort=True)["movie_id"].apply(lambda items: items.tail(window).tolist())
    return [history for history in recent if len(history) == window][:count]


async def _closed_loop(url: str, bodies: list[dict], concurrency: int) -> tuple[list[float], float]:
    queue, latencies = list(bodies), []

    async def user(session):
        while queue:
            body = queue.pop()
            began = time.perf_counter()
            status, _ = await post(session, "/recommend", body)
            latencies.append(time.perf_counter() - began)
            check_status(status, "/recommend")

    async with load_client(url, concurrency + 1) as session:
        check_status((await post(session, "/recommend", bodies[0]))[0], "/recommend")
        began = time.perf_counter()
        await asyncio.gather(*[user(session) for _ in range(concurrency)])
        return latencies, time.perf_counter() - began


def measure_recommend(url: str, model_repo: Path, model: str | None, movielens: Path, requests: int,
                      concurrency: int) -> dict:
    entry = load_model(model_repo, model, task="recommend")
    recommender = Recommender.load(entry, OnnxRecommendRunner(entry, None))
    chosen = histories(movielens, recommender.window, requests)
    floor = []
    for history in chosen:
        indices = recommender.indices(history, "history")
        began = time.perf_counter()
        recommender.scores(indices)
        floor.append(time.perf_counter() - began)
    latencies, wall = asyncio.run(_closed_loop(url, [{"history": h, "top_n": 10, "model": entry.name} for h in chosen],
                                               concurrency))
    http = {**percentiles(latencies), "requests_per_s": len(chosen) / wall,
            "samples_ms": [round(s * 1000, 3) for s in latencies]}
    floor = {**percentiles(floor), "ceiling_requests_per_s": 1.0 / float(np.mean(floor))}
    return {"http": http, "floor": floor, "p99_vs_floor": http["p99_ms"] / floor["p99_ms"],
            "throughput_vs_floor": http["requests_per_s"] / floor["ceiling_requests_per_s"]}
