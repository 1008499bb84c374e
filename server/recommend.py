"""Next-item recommendation with a sequential-recommender student exported by `rankstill seq export`,
run in-process (ONNX Runtime) or in a Triton server (`--backend triton`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

import numpy as np
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rankstill.model_repo import ModelEntry, default_model_name, list_models
from rankstill.scoring import onnx_session

from .dialects import Integer, json_integer
from .backend import triton_infer, triton_model_ready
from .errors import RequestError

MAX_LISTED_IDS = 10  # unknown ids named in an error message


class RecommendRequest(BaseModel):
    """Next-item recommendation from a user's recent history (catalogue ids, oldest first)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    history: list[Integer] = Field(min_length=1, description="Item ids the user interacted with, oldest first; the "
                                   "model reads the most recent ones (its window, see `GET /info`), all are excluded "
                                   "from the results with exclude_history.", examples=[[50, 172, 181]])
    candidates: list[Integer] | None = Field(None, min_length=1, description="Rank only these item ids; default: the whole catalogue.")
    top_n: Annotated[int, Field(ge=1, le=1000), BeforeValidator(json_integer)] = Field(10, description="How many items to return.")
    exclude_history: bool = Field(True, description="Never recommend an item already in the history.")
    model: str | None = Field(None, description="Recommender in the repository; default: the repository's default.")


class Recommendation(BaseModel):
    id: int
    score: float = Field(description="Model score (higher = more likely next); comparable within one response.")
    title: str | None = None


class RecommendResponse(BaseModel):
    model: str
    results: list[Recommendation]


class OnnxRecommendRunner:
    """The recommender's ONNX graph in-process (ONNX Runtime)."""

    def __init__(self, entry: ModelEntry, threads: int | None):
        self.session = onnx_session(entry.onnx_path, threads or 1)  # one history per run: more threads only add hand-offs
        self.input_names = frozenset(i.name for i in self.session.get_inputs())  # Caser's graph reads no lengths

    def scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["scores"], {k: v for k, v in feeds.items() if k in self.input_names})[0]

    def is_ready(self) -> bool:
        return True


class TritonRecommendRunner:
    """The same model in a Triton server (gRPC): one request per history; Triton's dynamic batcher
    merges concurrent ones (every request has the same shape). Inputs are the ones the entry's
    graph has (`inputs` in rankstill.json, as its config.pbtxt lists them)."""

    def __init__(self, entry: ModelEntry, url: str, timeout_s: float):
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self._client = grpcclient.InferenceServerClient(url)
        self.model_name = entry.name
        self.timeout_s = timeout_s
        self.input_names = frozenset(entry.metadata.get("inputs", ("history", "lengths")))

    def scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        inputs = []
        for name, value in feeds.items():
            if name not in self.input_names:
                continue
            value = value.reshape(len(value), -1)  # lengths: dims [1] in config.pbtxt, reshaped to [] for the model
            tensor = self._grpc.InferInput(name, list(value.shape), "INT64")
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return triton_infer(self._client, self.model_name, inputs, self.timeout_s).as_numpy("scores")

    def is_ready(self) -> bool:
        return triton_model_ready(self._client, self.model_name)


@dataclass
class Recommender:
    entry: ModelEntry
    runner: OnnxRecommendRunner | TritonRecommendRunner
    item_ids: np.ndarray  # index -> catalogue id
    titles: list[str]
    index_of: dict[int, int]  # catalogue id -> index

    @classmethod
    def load(cls, entry: ModelEntry, runner) -> "Recommender":
        catalogue = json.loads(entry.items_path.read_text())
        item_ids = np.array([item["id"] for item in catalogue], dtype=np.int64)
        return cls(entry, runner, item_ids, [item["title"] for item in catalogue],
                   {int(item_id): index for index, item_id in enumerate(item_ids)})

    @property
    def window(self) -> int:
        return int(self.entry.metadata["window"])

    def indices(self, ids: list[int], field: str) -> np.ndarray:
        unknown = [i for i in ids if i not in self.index_of]
        if unknown:
            raise RequestError(404, f"unknown item ids in {field}: {unknown[:MAX_LISTED_IDS]}"
                                    f"{' …' if len(unknown) > MAX_LISTED_IDS else ''} (model {self.entry.name!r})")
        return np.array([self.index_of[i] for i in ids], dtype=np.int64)

    def scores(self, history: np.ndarray) -> np.ndarray:
        padded = np.full((1, self.window), len(self.item_ids), dtype=np.int64)
        padded[0, : len(history)] = history
        return self.runner.scores({"history": padded, "lengths": np.array([len(history)], dtype=np.int64)})[0]

    def recommend(self, request: RecommendRequest) -> list[Recommendation]:
        seen = self.indices(request.history, "history")
        history = seen[-self.window:]  # the model reads its window of the most recent items
        pool = (np.unique(self.indices(request.candidates, "candidates")) if request.candidates is not None
                else np.arange(len(self.item_ids)))
        if request.exclude_history:
            pool = pool[~np.isin(pool, seen)]
        scores = self.scores(history)[pool]
        order = np.argsort(-scores, kind="stable")[: request.top_n]
        return [Recommendation(id=int(self.item_ids[i]), score=float(s), title=self.titles[i])
                for i, s in zip(pool[order], scores[order])]


class RecommendService:
    """Every `task: recommend` model of the repository, run in-process with ONNX Runtime or, with
    `backend: triton`, in the Triton server at `triton_url` (the same `model_repo/` entries)."""

    def __init__(self, settings):
        def runner(entry: ModelEntry):
            if settings.backend.value == "triton":
                return TritonRecommendRunner(entry, settings.triton_url, settings.triton_timeout)
            return OnnxRecommendRunner(entry, settings.threads)

        repo = settings.model_repo
        self.models = {entry.name: Recommender.load(entry, runner(entry))
                       for entry in list_models(repo) if entry.task == "recommend"}
        self.default_model = settings.recommend_model or (default_model_name(repo, "recommend") if self.models else None)

    def is_ready(self) -> bool:
        return all(model.runner.is_ready() for model in self.models.values())

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
