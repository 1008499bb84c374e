"""The API contract: request and response models for the rerank shapes clients already speak.

- `POST /rerank` with `documents` (Jina / Cohere v1): `{model, results: [{index, relevance_score, document?}], usage}`
- `POST /rerank` with `texts` (Hugging Face TEI): a bare array `[{index, score, text?}]`, never cut
- `POST /v2/rerank` (Cohere v2): `{id, results: [{index, relevance_score}], meta}`
"""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator


class DocumentObject(BaseModel):
    """A document given as an object (Cohere v1 accepts `{"text": ...}`)."""

    text: StrictStr


class RerankRequest(BaseModel):
    """Jina / Cohere v1 (`documents`) or TEI (`texts`) rerank request. Give exactly one list.

    Pairs longer than the model's maximum length (see `GET /info`) are truncated by tokens,
    longer side first; the response header `X-Truncated-Documents` counts them.
    """

    model_config = ConfigDict(extra="ignore")

    query: StrictStr = Field(description="The search query.", examples=["cordless drill"])
    documents: list[Union[StrictStr, DocumentObject]] | None = Field(
        None, description="Candidates to rank (Jina / Cohere v1)."
    )
    texts: list[StrictStr] | None = Field(None, description="Candidates to rank (TEI).")
    top_n: int | None = Field(None, ge=1, description="Return only the n best (documents style only).")
    return_documents: bool = Field(True, description="Echo each document in the results (documents style).")
    raw_scores: bool = Field(False, description="TEI: return raw logits instead of sigmoid scores.")
    return_text: bool = Field(False, description="TEI: echo each text in the results.")
    model: str | None = Field(None, description="Model in the repository; default: the repository's default.")

    @model_validator(mode="after")
    def _check(self) -> "RerankRequest":
        if not self.query.strip():
            raise ValueError("query must not be empty")
        if (self.documents is None) == (self.texts is None):
            raise ValueError("give exactly one of `documents` (Jina/Cohere) or `texts` (TEI)")
        if not (self.documents or self.texts):
            raise ValueError("the list of documents must not be empty")
        return self

    @property
    def is_tei(self) -> bool:
        return self.texts is not None

    def candidate_texts(self) -> list[str]:
        if self.texts is not None:
            return list(self.texts)
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class Usage(BaseModel):
    total_tokens: int


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class CohereV2Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    query: StrictStr
    documents: list[StrictStr]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "CohereV2Request":
        if not self.query.strip():
            raise ValueError("query must not be empty")
        if not self.documents:
            raise ValueError("the list of documents must not be empty")
        return self


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float


class CohereV2Meta(BaseModel):
    api_version: dict = Field(default_factory=lambda: {"version": "2"})
    billed_units: dict = Field(default_factory=lambda: {"search_units": 1})
    warnings: list[str] = Field(default_factory=list)


class CohereV2Response(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: CohereV2Meta


class ErrorBody(BaseModel):
    detail: str | list


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
