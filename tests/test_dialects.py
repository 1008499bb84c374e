"""Each dialect's hand-built response body is exactly what its documented response model describes."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import TypeAdapter

from rankstill.server.dialects import (CohereV1Request, CohereV2Request, CohereV2Response, RerankResponse, TeiRequest,
                                       TeiResult)
from rankstill.server.service import Ranking

DOCUMENTS = ["cordless drill", "drill bit set", "paint roller", "hammer drill"]
RANKING = Ranking("rerank-student", np.array([0.5, -1.0, -3.0, 2.0], np.float32), tokens=40, truncated=1, max_length=64)


def _round_trip(model, body):
    """The body read by the response model and written back: unchanged only if every key and type matches."""
    adapter = TypeAdapter(model)
    return adapter.dump_python(adapter.validate_python(body, strict=True), exclude_none=True)


@pytest.mark.parametrize("request_body, model", [
    (CohereV1Request(query="drill", documents=DOCUMENTS), RerankResponse),
    (CohereV1Request(query="drill", documents=DOCUMENTS, top_n=2, return_documents=False), RerankResponse),
    (TeiRequest(query="drill", texts=DOCUMENTS), list[TeiResult]),
    (TeiRequest(query="drill", texts=DOCUMENTS, raw_scores=True, return_text=True), list[TeiResult]),
    (CohereV2Request(query="drill", documents=DOCUMENTS, top_n=3), CohereV2Response),
])
def test_response_bodies_match_their_documented_models(request_body, model):
    body = request_body.respond(request_body.to_query(), RANKING)
    assert _round_trip(model, body) == body


def test_results_are_best_first_with_the_ranking_scores():
    request = CohereV1Request(query="drill", documents=DOCUMENTS, top_n=3)
    v1 = request.respond(request.to_query(), RANKING)
    assert [r["index"] for r in v1["results"]] == [3, 0, 1]
    assert [r["document"]["text"] for r in v1["results"]] == ["hammer drill", "cordless drill", "drill bit set"]
    assert v1["results"][0]["relevance_score"] == pytest.approx(1 / (1 + np.exp(-2.0)))
    tei = TeiRequest(query="drill", texts=DOCUMENTS, raw_scores=True).respond(None, RANKING)
    assert [r["score"] for r in tei] == [2.0, 0.5, -1.0, -3.0] and "text" not in tei[0]
    v2 = CohereV2Request(query="drill", documents=DOCUMENTS).respond(None, RANKING)
    assert v2["meta"]["warnings"] == ["1 documents were truncated to 64 tokens"]
