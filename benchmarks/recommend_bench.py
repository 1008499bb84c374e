"""`/recommend` latency in `rankstill bench`: real MovieLens histories (each user's most recent items,
oldest first, cut to the model's window), over HTTP at a given concurrency, beside the floor (the
recommender's ONNX model run directly on the same histories), the two timed in turns."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pandas as pd

from rankstill.model_repo import load_model
from rankstill.server.recommend import OnnxRecommendRunner, Recommender

from .latency import FLOOR_TURNS, percentiles, time_load

RATINGS_FILE = "MovieLens100k_data.parquet.brotli"


def histories(movielens: Path, window: int, count: int) -> list[list[int]]:
    ratings = pd.read_parquet(Path(movielens) / RATINGS_FILE).sort_values(["user_id", "timestamp"], kind="stable")
    recent = ratings.groupby("user_id", sort=True)["movie_id"].apply(lambda items: items.tail(window).tolist())
    return [history for history in recent if len(history) == window][:count]


def measure_recommend(url: str, model_repo: Path, model: str | None, movielens: Path, requests: int,
                      concurrency: int) -> dict:
    """/recommend over HTTP and the floor on the same histories, timed in turns (every two requests at
    concurrency 1, `FLOOR_TURNS` parts above; see `time_load`)."""
    entry = load_model(model_repo, model, task="recommend")
    recommender = Recommender.load(entry, OnnxRecommendRunner(entry, None))
    chosen = histories(movielens, recommender.window, requests)
    floor = []

    def floor_turn(indices: list[int]) -> None:
        for index in indices:
            history = recommender.indices(chosen[index], "history")
            began = time.perf_counter()
            recommender.scores(history)
            floor.append(time.perf_counter() - began)

    http = asyncio.run(time_load(url, "/recommend", [{"history": h, "top_n": 10, "model": entry.name} for h in chosen],
                                 concurrency, warm_passes=0, keep_samples=True,
                                 turns=len(chosen) if concurrency == 1 else FLOOR_TURNS, between_turns=floor_turn))
    floor = {**percentiles(floor), "ceiling_requests_per_s": 1.0 / float(np.mean(floor))}
    return {"http": http, "floor": floor, "p99_vs_floor": http["p99_ms"] / floor["p99_ms"],
            "throughput_vs_floor": http["requests_per_s"] / floor["ceiling_requests_per_s"]}
