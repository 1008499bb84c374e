"""The rerank API dialects clients already speak, each mapped to one internal `RerankQuery` and back.

- Jina / Cohere v1 (`POST /rerank` with `documents`): `{model, results: [{index, relevance_score, document?}], usage}`
- Hugging Face TEI (`POST /rerank` with `texts`): a bare array `[{index, score, text?}]`, never cut
- Cohere v2 (`POST /v2/rerank`): `{id, results: [{index, relevance_score}], meta}`

Each request model validates its own shape and has `to_query()` and `respond(ranking)`; `respond` builds
the JSON body as plain lists and dicts (a hundred pydantic results cost 0.25 ms a request), and the
response models below describe it in the OpenAPI document (tests/test_dialects.py holds them to it).
Pairs longer than the model's maximum length (see `GET /info`) are truncated by tokens, longer
side first; the response header `X-Truncated-Documents` counts them.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, StrictStr, Tag, field_validator

from .config import LongDocuments
from .service import Ranking, RerankQuery


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (it holds a lone surrogate such as \\ud800): send UTF-8 text") from None
    return text


Text = Annotated[StrictStr, AfterValidator(_unicode)]


def json_integer(value):
    """A JSON integer: 3 or 3.0 (JSON Schema's integer), never "3" or true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("Input should be a valid integer")
    return value


Integer = Annotated[int, BeforeValidator(json_integer)]
PositiveInteger = Annotated[int, Field(ge=1), BeforeValidator(json_integer)]


def _not_blank(query: str) -> str:
    if not query.strip():
        raise ValueError("query must not be empty")
    return query


def _not_empty(documents: list) -> list:
    if not documents:
        raise ValueError("the list of documents must not be empty")
    return documents


# The schema states what the validators check (so generated clients and contract tests know), while
# the validators give the error messages.
NOT_BLANK = {"minLength": 1, "pattern": r"\S"}
NOT_EMPTY = {"minItems": 1}


class _Dialect(BaseModel):
    # Strict: `"2"` is not a number and `0` not a boolean. Unknown fields are ignored: clients send
    # fields of their own (rank_fields, max_chunks_per_doc, ...).
    model_config = ConfigDict(extra="ignore", strict=True)

    query: Text = Field(description="The search query.", examples=["cordless drill"], json_schema_extra=NOT_BLANK)
    model: str | None = Field(None, description="Model in the repository (or an alias); a name the server does not "
                              "hold gets the default model unless the server runs with --strict-models.")
    long_documents: Literal["truncate", "chunk"] | None = Field(
        None, description="Pairs longer than the model's window: `truncate`, or `chunk` (overlapping windows, best "
        "score kept); default: the server's.")

    _query_not_blank = field_validator("query")(_not_blank)

    @property
    def long_documents_mode(self) -> LongDocuments | None:
        return LongDocuments(self.long_documents) if self.long_documents else None


# Jina / Cohere v1

class DocumentObject(BaseModel):
    """A document given as an object (Cohere v1 accepts `{"text": ...}`)."""

    model_config = ConfigDict(strict=True)

    text: Text


class RerankDocument(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model read (windows included); equal to total_tokens.")
    total_tokens: int


class RerankResponse(BaseModel):
    model: str
    results: list[RerankResult]
    usage: Usage


class CohereV1Request(_Dialect):
    """Jina / Cohere v1: `documents` as strings or `{"text": ...}`."""

    documents: list[Union[Text, DocumentObject]] = Field(description="Candidates to rank.", json_schema_extra=NOT_EMPTY)
    top_n: PositiveInteger | None = Field(None, description="Return only the n best.")
    return_documents: bool = Field(True, description="Echo each document in the results.")

    _documents_not_empty = field_validator("documents")(_not_empty)

    def to_query(self) -> RerankQuery:
        return RerankQuery(self.query, [d if isinstance(d, str) else d.text for d in self.documents], self.model,
                           self.long_documents_mode)

    def respond(self, query: RerankQuery, ranking: Ranking) -> dict:
        order, scores = ranking.best(self.top_n)
        results = [{"index": index, "relevance_score": score} for index, score in zip(order, scores)]
        if self.return_documents:
            for result in results:
                result["document"] = {"text": query.documents[result["index"]]}
        return {"model": ranking.model, "results": results,
                "usage": {"prompt_tokens": ranking.tokens, "total_tokens": ranking.tokens}}


# Hugging Face TEI

class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class TeiRequest(_Dialect):
    """TEI: `texts`; one result per text, best first. As in TEI, `model` is ignored (the default model
    answers) and `top_n` is not part of the shape."""

    texts: list[Text] = Field(description="Candidates to rank.", json_schema_extra=NOT_EMPTY)
    raw_scores: bool = Field(False, description="Return raw logits instead of sigmoid scores.")
    return_text: bool = Field(False, description="Echo each text in the results.")
    truncate: bool | None = Field(None, description="false: a pair longer than the model's window is refused (413); "
                                  "default: truncated.")
    truncation_direction: Literal["Right", "Left", "right", "left"] = Field(
        "Right", description="Left: truncation keeps the end of each text.")

    _texts_not_empty = field_validator("texts")(_not_empty)

    def to_query(self) -> RerankQuery:
        return RerankQuery(self.query, list(self.texts), None, self.long_documents_mode,
                           truncate=self.truncate is not False, cut_left=self.truncation_direction.lower() == "left")

    def respond(self, query: RerankQuery, ranking: Ranking) -> list[dict]:
        order, scores = ranking.best(None, raw=self.raw_scores)
        results = [{"index": index, "score": score} for index, score in zip(order, scores)]
        if self.return_text:
            for result in results:
                result["text"] = query.documents[result["index"]]
        return results


def _rerank_dialect(body) -> str | None:
    """`documents` means Jina / Cohere v1, `texts` means TEI; both or neither is an error."""
    if isinstance(body, dict) and ("documents" in body) != ("texts" in body):
        return "documents" if "documents" in body else "texts"
    return None


RerankBody = Annotated[
    Union[Annotated[CohereV1Request, Tag("documents")], Annotated[TeiRequest, Tag("texts")]],
    Discriminator(_rerank_dialect, custom_error_type="rerank_dialect",
                  custom_error_message="give exactly one of `documents` (Jina/Cohere) or `texts` (TEI)"),
]


# Cohere v2

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


class CohereV2Request(_Dialect):
    documents: list[Text] = Field(description="Candidates to rank.", json_schema_extra=NOT_EMPTY)
    top_n: PositiveInteger | None = Field(None, description="Return only the n best.")
    max_tokens_per_doc: PositiveInteger | None = Field(None, description="Each document is cut to this many tokens first "
                                           "(then the pair to the model's window).")

    _documents_not_empty = field_validator("documents")(_not_empty)

    def to_query(self) -> RerankQuery:
        return RerankQuery(self.query, list(self.documents), self.model, self.long_documents_mode,
                           document_tokens=self.max_tokens_per_doc)

    def respond(self, query: RerankQuery, ranking: Ranking) -> dict:
        order, scores = ranking.best(self.top_n)
        warnings = ([f"{ranking.truncated} documents were truncated to {ranking.max_length} tokens"]
                    if ranking.truncated else [])
        return {"id": str(uuid.uuid4()),
                "results": [{"index": index, "relevance_score": score} for index, score in zip(order, scores)],
                "meta": CohereV2Meta(warnings=warnings).model_dump()}
