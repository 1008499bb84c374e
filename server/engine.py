"""Scoring engine: tokenize (query, document) pairs and run them through a backend.

Large batches are cut into length-sorted chunks so that each chunk pads only to its own
longest pair.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rankstill.model_repo import ModelEntry
from rankstill.pair_tokenizer import PairTokenizer, length_sorted_chunks

from .backend import Backend, OnnxRuntimeBackend


@dataclass
class Scored:
    logits: np.ndarray  # float32 [pairs]
    tokens: np.ndarray  # int [pairs]: tokens kept per pair
    truncated: np.ndarray  # bool [pairs]: the pair was cut to max_length
    tokenize_seconds: float = 0.0
    inference_seconds: float = 0.0


class ScoringEngine:
    def __init__(self, tokenizer: PairTokenizer, backend: Backend, chunk_pairs: int = 256):
        self.tokenizer = tokenizer
        self.backend = backend
        self.chunk_pairs = chunk_pairs
        # A token is at least one character and rarely more than a few dozen: cutting texts at
        # this many characters never changes the tokens kept, but bounds tokenization work.
        self.max_chars = tokenizer.max_length * 50

    @classmethod
    def onnxruntime(cls, entry: ModelEntry, threads: int | None = None, chunk_pairs: int = 256) -> "ScoringEngine":
        """The entry's tokenizer and model, run in-process by ONNX Runtime."""
        return cls(PairTokenizer.from_file(entry.tokenizer_path, entry.max_length),
                   OnnxRuntimeBackend(entry.onnx_path, threads), chunk_pairs=chunk_pairs)

    def score(self, queries: list[str], documents: list[str]) -> Scored:
        queries = [q[: self.max_chars] for q in queries]
        documents = [d[: self.max_chars] for d in documents]
        n = len(queries)
        result = Scored(np.empty(n, np.float32), np.zeros(n, np.int64), np.zeros(n, bool))
        for rows in length_sorted_chunks(queries, documents, self.chunk_pairs):
            began = time.perf_counter()
            encoded = self.tokenizer.encode([queries[r] for r in rows], [documents[r] for r in rows])
            tokenized = time.perf_counter()
            result.logits[rows] = self.backend.run(encoded.as_feeds())
            result.inference_seconds += time.perf_counter() - tokenized
            result.tokenize_seconds += tokenized - began
            result.tokens[rows] = encoded.attention_mask.sum(axis=1)
            result.truncated[rows] = encoded.truncated_rows
        return result
