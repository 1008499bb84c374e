"""Next-item recommendation with a sequential-recommender student exported by `rankstill seq export`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rankstill.model_repo import ModelEntry, default_model_name, list_models
from rankstill.scoring import onnx_session

from .errors import RequestError

MAX_LISTED_IDS = 10  # unknown ids named in an error message


class RecommendRequest(BaseModel):
    """Next-item recommendation from a user's recent history (catalogue ids, oldest first)."""

    model_config = ConfigDict(extra="forbid")

    history: list[int] = Field(min_length=1, description="Item ids the user interacted with, oldest first "
                               "(at most the model's window, see `GET /info`).", examples=[[50, 172, 181]])
    candidates: list[int] | None = Field(None, min_length=1, description="Rank only these item ids; default: the whole catalogue.")
    top_n: int = Field(10, ge=1, le=1000, description="How many items to return.")
    exclude_history: bool = Field(True, description="Never recommend an item already in the history.")
    model: str | None = Field(None, description="Recommender in the repository; default: the repository's default.")


class Recommendation(BaseModel):
    id: int
    score: float = Field(description="Model score (higher = more likely next); comparable within one response.")
    title: str | None = None


class RecommendResponse(BaseModel):
    model: str
    results: list[Recommendation]


@dataclass
class Recommender:
    entry: ModelEntry
    session: object  # onnxruntime.InferenceSession
    item_ids: np.ndarray  # index -> catalogue id
    titles: list[str]
    index_of: dict[int, int]  # catalogue id -> index
    input_names: frozenset[str]  # a model may ignore lengths (Caser)

    @classmethod
    def load(cls, entry: ModelEntry, threads: int | None) -> "Recommender":
        session = onnx_session(entry.onnx_path, threads or 1)  # one history per run: more threads only add hand-offs
        catalogue = json.loads(entry.items_path.read_text())
        item_ids = np.array([item["id"] for item in catalogue], dtype=np.int64)
        return cls(entry, session, item_ids, [item["title"] for item in catalogue],
                   {int(item_id): index for index, item_id in enumerate(item_ids)},
                   frozenset(i.name for i in session.get_inputs()))

    @property
    def window(self) -> int:
        return int(self.entry.metadata["window"])

    def indices(self, ids: list[int], field: str) -> np.ndarray:
        unknown = [i for i in ids if i not in self.index_of]
        if unknown:
            raise RequestError(422, f"unknown item ids in {field}: {unknown[:MAX_LISTED_IDS]}"
                                    f"{' …' if len(unknown) > MAX_LISTED_IDS else ''} (model {self.entry.name!r})")
        return np.array([self.index_of[i] for i in ids], dtype=np.int64)

    def scores(self, history: np.ndarray) -> np.ndarray:
        padded = np.full((1, self.window), len(self.item_ids), dtype=np.int64)
        padded[0, : len(history)] = history
        feeds = {"history": padded, "lengths": np.array([len(history)], dtype=np.int64)}
        return self.session.run(["scores"], {k: v for k, v in feeds.items() if k in self.input_names})[0][0]

    def recommend(self, request: RecommendRequest) -> list[Recommendation]:
        if len(request.history) > self.window:
            raise RequestError(422, f"history has {len(request.history)} items; model {self.entry.name!r} reads at most "
                                    f"{self.window}: send the {self.window} most recent, oldest first")
        history = self.indices(request.history, "history")
        pool = (np.unique(self.indices(request.candidates, "candidates")) if request.candidates is not None
                else np.arange(len(self.item_ids)))
        if request.exclude_history:
            pool = pool[~np.isin(pool, history)]
        scores = self.scores(history)[pool]
        order = np.argsort(-scores, kind="stable")[: request.top_n]
        return [Recommendation(id=int(self.item_ids[i]), score=float(s), title=self.titles[i])
                for i, s in zip(pool[order], scores[order])]


class RecommendService:
    """Every `task: recommend` model of the repository, run in-process with ONNX Runtime."""

    def __init__(self, repo, default_model: str | None = None, threads: int | None = None):
        self.models = {entry.name: Recommender.load(entry, threads)
                       for entry in list_models(repo) if entry.task == "recommend"}
        self.default_model = default_model or (default_model_name(repo, "recommend") if self.models else None)

    def resolve(self, name: str | None) -> Recommender:
        if not self.models:
            raise RequestError(404, "no recommend model in the repository (export one with `rankstill seq export`)")
        name = name or self.default_model
        if name not in self.models:
            raise RequestError(404, f"unknown recommend model {name!r}; available: {sorted(self.models)}")
        return self.models[name]

    async def recommend(self, request: RecommendRequest) -> tuple[str, list[Recommendation]]:
        model = self.resolve(request.model)
        return model.entry.name, await asyncio.to_thread(model.recommend, request)
