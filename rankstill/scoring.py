"""The one torch-free scoring core: (query, document) pairs in, one logit per pair out.

Used by the server, export parity, the local shadow teacher, labelling with ONNX teachers and
the benchmarks, so that all of them tokenize, batch and pad the same way:

- `onnx_session` opens every ONNX Runtime session of the project with the same options;
- `PairScorer` tokenizes (`tokenize`), groups the pairs of one or several requests into
  length-sorted sub-batches of at most `max_batch_pairs`, each padded only to its own longest pair
  (`prepare`; the cut minimises padded tokens plus a measured per-run overhead), and runs the model
  on them (`run_prepared`) — nothing else happens on the thread that runs the model.

The model behind a scorer is any `Runner` (`run(feeds) -> logits`): ONNX Runtime here, a Triton
client in the server, or a PyTorch module in training, which scores through this same policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .model_repo import ModelEntry
from .pair_tokenizer import EncodedBatch, PairTokenizer, TokenizedPairs

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_MAX_BATCH_PAIRS = 256  # pairs in one model run
# What one more model run costs, in padded tokens (the padding policy trades padding for runs with it).
# Measured on the 2-core machine for the unpadded graphs `rankstill export` writes (run time of one
# short pair against 64 pairs × 32 tokens, with and without padding to 64, medians of 15): 264 for
# the fp32 student, 267 for int8; a padded token costs them a third to a half of a real one, so a 100-pair
# request runs in 2-3 sub-batches. It is fixed rather than measured at start-up because int8 scores
# depend on how pairs are grouped: a fixed value keeps them the same from one start to the next.
DEFAULT_RUN_OVERHEAD_TOKENS = 256.0
# A token is at least one character and rarely more than a few dozen: cutting texts at this many
# characters per token of the window never changes the tokens kept, but bounds tokenization work.
CHARS_PER_TOKEN_BOUND = 50


def onnx_session(path: str | Path, threads: int | None = None,
                 options: "onnxruntime.SessionOptions | None" = None) -> "onnxruntime.InferenceSession":
    """An ONNX Runtime CPU session with the project's options (set on `options` when given, e.g. profiling).

    `threads`: intra-op threads (default: all cores). Idle threads do not spin: tokenization,
    the event loop and other sessions need the same few cores.
    """
    import onnxruntime as ort  # imported on first use: `rankstill --help` stays quick

    options = options or ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Runner(Protocol):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Logits [batch] for input_ids / attention_mask / token_type_ids [batch, seq]."""

    def is_ready(self) -> bool:
        """Whether the model can serve now."""


class OnnxRunner:
    """A cross-encoder ONNX model run in-process; inputs the model does not declare are dropped."""

    def __init__(self, path: str | Path, threads: int | None = None,
                 options: "onnxruntime.SessionOptions | None" = None):
        self.session = onnx_session(path, threads, options)
        self._input_names = {i.name for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        used = {name: value for name, value in feeds.items() if name in self._input_names}
        return self.session.run(None, used)[0].reshape(-1)

    def is_ready(self) -> bool:
        return True


@dataclass
class PreparedBatch:
    """Requests' pairs cut into padded sub-batches, ready for the model."""

    chunks: list[tuple[np.ndarray, EncodedBatch]]  # (rows of the concatenated pairs, padded batch)
    sizes: list[int]  # pairs per request, in order

    @property
    def pairs(self) -> int:
        return sum(self.sizes)


class PairScorer:
    def __init__(self, tokenizer: PairTokenizer, runner: Runner, max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS,
                 run_overhead_tokens: float = DEFAULT_RUN_OVERHEAD_TOKENS):
        self.tokenizer = tokenizer
        self.runner = runner
        self.max_batch_pairs = max_batch_pairs
        self.run_overhead_tokens = run_overhead_tokens
        self.max_chars = tokenizer.max_length * CHARS_PER_TOKEN_BOUND

    @classmethod
    def onnx(cls, onnx_path: str | Path, tokenizer: PairTokenizer, threads: int | None = None,
             max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS) -> "PairScorer":
        return cls(tokenizer, OnnxRunner(onnx_path, threads), max_batch_pairs)

    @classmethod
    def for_entry(cls, entry: ModelEntry, threads: int | None = None,
                  max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS) -> "PairScorer":
        """A model entry of `model_repo/` (its tokenizer and ONNX file), run in-process."""
        return cls.onnx(entry.onnx_path, PairTokenizer.from_file(entry.tokenizer_path, entry.max_length),
                        threads, max_batch_pairs)

    def tokenize(self, queries: list[str], documents: list[str], document_tokens: int | None = None,
                 cut_left: bool = False) -> TokenizedPairs:
        """One pair per document, cut to the model's window (see `PairTokenizer.tokenize`)."""
        bound = (lambda text: text[-self.max_chars:]) if cut_left else (lambda text: text[: self.max_chars])
        return self.tokenizer.tokenize([bound(q) for q in queries], [bound(d) for d in documents],
                                       document_tokens, cut_left)

    def tokenize_windows(self, query: str, documents: list[str], overlap: int) -> TokenizedPairs:
        """Long documents as overlapping windows (see `PairTokenizer.tokenize_windows`); no text is cut."""
        return self.tokenizer.tokenize_windows(query, documents, overlap)

    def prepare(self, requests: list[TokenizedPairs]) -> PreparedBatch:
        pairs = TokenizedPairs.concat(requests)
        return PreparedBatch(list(pairs.chunks(self.max_batch_pairs, self.run_overhead_tokens)),
                             [len(r) for r in requests])

    def run_prepared(self, batch: PreparedBatch) -> list[np.ndarray]:
        """The model on each sub-batch; one logits array per request, in the pairs' order."""
        logits = np.empty(batch.pairs, dtype=np.float32)
        for rows, encoded in batch.chunks:
            logits[rows] = self.runner.run(encoded.as_feeds())
        return np.split(logits, np.cumsum(batch.sizes)[:-1])

    def run(self, pairs: TokenizedPairs) -> np.ndarray:
        return self.run_prepared(self.prepare([pairs]))[0]

    def score(self, queries: list[str], documents: list[str]) -> np.ndarray:
        """One logit per pair, in order."""
        return self.run(self.tokenize(queries, documents))
