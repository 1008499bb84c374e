"""(query, document) pair tokenization for cross-encoders, shared by training, export and serving.

Uses the Rust `tokenizers` library on the model's own `tokenizer.json`; pads each
batch to its longest pair only (dynamic padding) and truncates pairs to `max_length`
tokens, cutting the longer side first (the library's `longest_first` rule).

For BERT-style `[CLS] query [SEP] document [SEP]` tokenizers, each distinct text is
tokenized once and its word pieces kept in a bounded cache: a rerank request repeats its
query for every document, and catalogue documents recur across requests. Pairs are then
assembled from the pieces, exactly as the library would encode them (tested).
"""

from __future__ import annotations

import collections
import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass(frozen=True)
class EncodedBatch:
    input_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, seq]
    token_type_ids: np.ndarray  # int64 [batch, seq]

    def as_feeds(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


@dataclass(frozen=True)
class TokenizedPairs:
    """Pairs as token ids, not yet padded: padding is decided per batch (see `chunks`)."""

    ids: list[list[int]]  # per pair, special tokens included
    first_segment: np.ndarray  # int [pairs]: tokens of type 0 (the query side with its special tokens)
    truncated: np.ndarray  # bool [pairs]: the pair lost tokens to max_length
    pad_id: int = 0
    document: np.ndarray | None = None  # int [pairs]: the document each pair is a window of (None: pair i = document i)

    def __len__(self) -> int:
        return len(self.ids)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(ids) for ids in self.ids), dtype=np.int64, count=len(self.ids))

    def subset(self, rows: np.ndarray) -> "TokenizedPairs":
        """These pairs only, in this order (which document each pair belongs to is not kept)."""
        return TokenizedPairs([self.ids[r] for r in rows], self.first_segment[rows], self.truncated[rows], self.pad_id)

    def pad(self, rows: np.ndarray | None = None) -> EncodedBatch:
        """The chosen rows (default: all, in order) padded to their own longest pair."""
        rows = np.arange(len(self.ids)) if rows is None else rows
        lengths = self.lengths[rows]
        positions = np.arange(lengths.max())
        real = positions < lengths[:, None]
        input_ids = np.full(real.shape, self.pad_id, dtype=np.int64)
        input_ids[real] = np.fromiter(itertools.chain.from_iterable(self.ids[r] for r in rows), np.int64, int(lengths.sum()))
        token_type_ids = real & (positions >= self.first_segment[rows][:, None])
        return EncodedBatch(input_ids, real.astype(np.int64), token_type_ids.astype(np.int64))

    def chunks(self, max_pairs: int, run_overhead_tokens: float = 0.0) -> Iterator[tuple[np.ndarray, EncodedBatch]]:
        """(row indices, padded batch) of at most `max_pairs` pairs, each padded to its own longest pair.

        Pairs are sorted by length and cut into the groups that minimise the model's work: padded
        tokens, plus `run_overhead_tokens` per group (what one more model run costs, in tokens). The
        best cut comes from dynamic programming over the sorted lengths.
        """
        order = np.argsort(self.lengths, kind="stable")
        for start, stop in _best_groups(self.lengths[order], max_pairs, run_overhead_tokens):
            rows = order[start:stop]
            yield rows, self.pad(rows)

    @classmethod
    def concat(cls, parts: list["TokenizedPairs"]) -> "TokenizedPairs":
        """The pairs of several requests as one batch (which document each pair belongs to is not kept)."""
        if len(parts) == 1:
            return parts[0]
        return cls([ids for part in parts for ids in part.ids], np.concatenate([p.first_segment for p in parts]),
                   np.concatenate([p.truncated for p in parts]), parts[0].pad_id)

    def per_document(self, logits: np.ndarray, documents: int) -> np.ndarray:
        """One logit per document: the pair's own, or the best of its windows."""
        if self.document is None:
            return logits
        best = np.full(documents, -np.inf, dtype=np.float32)
        np.maximum.at(best, self.document, logits)
        return best


class PairTokenizer:
    def __init__(self, tokenizer: Tokenizer, max_length: int, cache_size: int = 200_000):
        self.max_length = max_length
        self._tokenizer = tokenizer
        self._tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
        self._tokenizer.no_padding()
        self._pad_id = tokenizer.token_to_id("[PAD]") or 0
        self._cls, self._sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        # Pieces must be whole: pair truncation is applied after assembly.
        self._piece_tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._piece_tokenizer.no_truncation()
        self._piece_tokenizer.no_padding()
        self._pieces: collections.OrderedDict[str, list[int]] = collections.OrderedDict()
        self._cache_size = cache_size
        self._assemble = self._has_bert_pair_template()

    @classmethod
    def from_file(cls, path: str | Path, max_length: int) -> "PairTokenizer":
        return cls(Tokenizer.from_file(str(path)), max_length)

    def _has_bert_pair_template(self) -> bool:
        if self._cls is None or self._sep is None:
            return False
        probe = self._tokenizer.encode("query text", "document text")
        pieces = [self._piece_tokenizer.encode(t, add_special_tokens=False).ids for t in ("query text", "document text")]
        expected = [self._cls, *pieces[0], self._sep, *pieces[1], self._sep]
        return probe.ids == expected and probe.type_ids == [0] * (len(pieces[0]) + 2) + [1] * (len(pieces[1]) + 1)

    def _piece_ids(self, texts: list[str]) -> list[list[int]]:
        """Word-piece ids of each text without special tokens, through the bounded cache."""
        found = {}
        for text in dict.fromkeys(texts):
            if text in self._pieces:
                self._pieces.move_to_end(text)
                found[text] = self._pieces[text]
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            for text, encoding in zip(missing, self._piece_tokenizer.encode_batch(missing, add_special_tokens=False)):
                found[text] = self._pieces[text] = encoding.ids
            while len(self._pieces) > self._cache_size:
                self._pieces.popitem(last=False)
        return [found[t] for t in texts]

    def encode(self, queries: list[str], documents: list[str]) -> EncodedBatch:
        """Tokenized and padded to the longest pair, in the order given."""
        return self.tokenize(queries, documents).pad()

    def tokenize(self, queries: list[str], documents: list[str], document_tokens: int | None = None,
                 cut_left: bool = False) -> TokenizedPairs:
        """One pair per (query, document), cut to `max_length` tokens longer side first.

        `document_tokens`: each document is first cut to this many tokens (Cohere's max_tokens_per_doc);
        `cut_left`: cutting keeps the end of a text instead of its start (TEI's truncation_direction=Left).
        """
        if len(queries) != len(documents):
            raise ValueError("queries and documents must have the same length")
        if not self._assemble:
            if document_tokens is not None or cut_left:
                raise ValueError("this model's tokenizer has no [CLS] q [SEP] d [SEP] template: it can only cut "
                                 "pairs at the end, whole")
            return self._tokenize_with_library(queries, documents)
        budget = self.max_length - 3  # [CLS] q [SEP] d [SEP]
        ids, first_segment = [], np.empty(len(queries), dtype=np.int64)
        truncated = np.zeros(len(queries), dtype=bool)
        for row, (q, whole) in enumerate(zip(self._piece_ids(queries), self._piece_ids(documents))):
            d = _cut(whole, document_tokens if document_tokens is not None else len(whole), cut_left)
            keep_q, keep_d = _longest_first(len(q), len(d), budget)
            truncated[row] = keep_q < len(q) or keep_d < len(whole)
            ids.append([self._cls, *_cut(q, keep_q, cut_left), self._sep, *_cut(d, keep_d, cut_left), self._sep])
            first_segment[row] = keep_q + 2
        return TokenizedPairs(ids, first_segment, truncated, self._pad_id)

    def tokenize_windows(self, query: str, documents: list[str], overlap: int) -> TokenizedPairs:
        """Documents longer than the window become several pairs: the query with overlapping windows
        of the document that together cover all of it. `TokenizedPairs.document` names each pair's document.

        The query keeps at most half the window; a document shorter than what is left is one pair.
        """
        if not self._assemble:
            raise ValueError("this model's tokenizer has no [CLS] q [SEP] d [SEP] template: long documents "
                             "can only be truncated")
        budget = self.max_length - 3
        q = self._piece_ids([query])[0]
        q = q[: min(len(q), budget // 2)]
        window = budget - len(q)
        stride = max(1, window - overlap)
        ids, owner = [], []
        for index, d in enumerate(self._piece_ids(documents)):
            starts = [*range(0, len(d) - window, stride), max(0, len(d) - window)]
            for start in starts:
                ids.append([self._cls, *q, self._sep, *d[start:start + window], self._sep])
                owner.append(index)
        return TokenizedPairs(ids, np.full(len(ids), len(q) + 2, dtype=np.int64), np.zeros(len(ids), dtype=bool),
                              self._pad_id, np.array(owner, dtype=np.int64))

    def _tokenize_with_library(self, queries: list[str], documents: list[str]) -> TokenizedPairs:
        encodings = self._tokenizer.encode_batch(list(zip(queries, documents)))
        first_segment = np.array([e.type_ids.index(1) if 1 in e.type_ids else len(e.ids) for e in encodings],
                                 dtype=np.int64)
        truncated = np.array([bool(e.overflowing) for e in encodings], dtype=bool)
        return TokenizedPairs([e.ids for e in encodings], first_segment, truncated, self._pad_id)


def _best_groups(sorted_lengths: np.ndarray, max_size: int, overhead: float) -> list[tuple[int, int]]:
    """[start, stop) groups of sorted lengths minimising sum(overhead + size × longest), size ≤ max_size.

    Dynamic programming over the cut points that can be optimal: where the length changes, or after a full
    group. (Moving a cut that lies inside a run of equal lengths one pair to the right never costs more: the
    group before keeps its longest pair, the group after loses a pair or a run.) A 100-pair request has a
    few dozen such points, not a hundred. Plain Python: on lists this short, numpy's per-call cost dominates
    (it ran on the inference thread's critical path at 0.3 ms a lane)."""
    lengths = sorted_lengths.tolist()
    n = len(lengths)
    points = [0, *(i for i in range(1, n) if lengths[i] != lengths[i - 1]), n]
    if n > max_size:  # full groups: a cut max_size after every cut point, and after those in turn
        closed, pending = set(points), list(points)
        while pending:
            point = pending.pop() + max_size
            if point < n and point not in closed:
                closed.add(point)
                pending.append(point)
        points = sorted(closed)
    best, cut = [0.0] * len(points), [0] * len(points)
    first = 0
    for index in range(1, len(points)):
        stop = points[index]
        while stop - points[first] > max_size:
            first += 1
        longest = lengths[stop - 1]
        best[index], cut[index] = min((best[start] + overhead + (stop - points[start]) * longest, start)
                                      for start in range(first, index))
    groups, index = [], len(points) - 1
    while index > 0:
        groups.append((points[cut[index]], points[index]))
        index = cut[index]
    return groups[::-1]


def _cut(pieces: list[int], keep: int, from_left: bool) -> list[int]:
    """`keep` pieces: the first ones, or the last ones when cutting from the left."""
    if keep >= len(pieces):
        return pieces
    return pieces[len(pieces) - keep:] if from_left else pieces[:keep]


def _longest_first(n_first: int, n_second: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each side under the `longest_first` rule of the tokenizers library.

    The shorter side is kept whole when the longer can give up enough; otherwise both are
    cut to half the budget, the longer side keeping the odd token.
    """
    if n_first + n_second <= budget:
        return n_first, n_second
    short, long_ = sorted((n_first, n_second))
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short, long_ = budget // 2, budget // 2 + budget % 2
    return (long_, short) if n_first > n_second else (short, long_)
