"""BM25 over product titles (bm25s), for candidate generation and as a baseline ranker."""

from __future__ import annotations

import bm25s
import numpy as np


class TitleIndex:
    def __init__(self, item_ids: list[str], titles: list[str]):
        self.item_ids = list(item_ids)
        self._row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._retriever = bm25s.BM25()
        self._retriever.index(bm25s.tokenize(list(titles), stopwords="en", show_progress=False),
                              show_progress=False)

    @classmethod
    def of_products(cls, products) -> "TitleIndex":
        """An index over a catalogue frame with `product_uid` and `product_title` columns."""
        return cls(list(products["product_uid"]), list(products["product_title"]))

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every indexed title for `query`."""
        tokens = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        if not tokens:
            return np.zeros(len(self.item_ids), dtype=np.float32)
        return np.asarray(self._retriever.get_scores(tokens), dtype=np.float32)

    def score_items(self, query: str, item_ids: list[str]) -> np.ndarray:
        all_scores = self.scores(query)
        return all_scores[[self._row_of[item_id] for item_id in item_ids]]

    def top_k(self, query: str, k: int, exclude: set[str] = frozenset()) -> list[tuple[str, float]]:
        """The k best-scoring items with a positive score, skipping `exclude`."""
        all_scores = self.scores(query)
        wanted = k + len(exclude)
        top = np.argpartition(-all_scores, min(wanted, all_scores.size - 1))[: wanted + 1]
        top = top[np.argsort(-all_scores[top], kind="stable")]
        picked = []
        for row in top:
            item_id = self.item_ids[row]
            if all_scores[row] <= 0 or item_id in exclude:
                continue
            picked.append((item_id, float(all_scores[row])))
            if len(picked) == k:
                break
        return picked


def bm25_scores_for(frame, index: TitleIndex, id_column: str = "product_uid") -> np.ndarray:
    """BM25 score of each (query, `id_column`) row of `frame`, grouped per query."""
    scores = np.zeros(len(frame), dtype=np.float32)
    positions = {label: i for i, label in enumerate(frame.index)}
    for query, group in frame.groupby("query", sort=False):
        rows = [positions[label] for label in group.index]
        scores[rows] = index.score_items(query, list(group[id_column]))
    return scores
