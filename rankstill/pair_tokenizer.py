"""(query, document) pair tokenization for cross-encoders, shared by training, export and serving.

Uses the Rust `tokenizers` library on the model's own `tokenizer.json`; pads each
batch to its longest pair only (dynamic padding) and truncates pairs to `max_length`
tokens, cutting the longer side first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray  # int64 [batch, seq]
    truncated_rows: np.ndarray  # bool [batch]: the pair lost tokens to max_length

    def as_feeds(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }

    @property
    def truncated(self) -> int:
        return int(self.truncated_rows.sum())

    @property
    def total_tokens(self) -> int:
        return int(self.attention_mask.sum())


class PairTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int):
        self.max_length = max_length
        self._tokenizer = tokenizer
        self._tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self._tokenizer.no_padding()
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0

    @classmethod
    def from_file(cls, path: str | Path, max_length: int) -> "PairTokenizer":
        return cls(Tokenizer.from_file(str(path)), max_length)

    def encode(self, queries: list[str], documents: list[str]) -> EncodedBatch:
        if len(queries) != len(documents):
            raise ValueError("queries and documents must have the same length")
        encodings = self._tokenizer.encode_batch(list(zip(queries, documents)))
        width = max(len(e.ids) for e in encodings)
        batch = len(encodings)
        input_ids = np.full((batch, width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((batch, width), dtype=np.int64)
        token_type_ids = np.zeros((batch, width), dtype=np.int64)
        truncated = np.zeros(batch, dtype=bool)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = encoding.type_ids
            truncated[row] = bool(encoding.overflowing)
        return EncodedBatch(input_ids, attention_mask, token_type_ids, truncated)
