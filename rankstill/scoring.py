"""The one torch-free scoring core: (query, document) pairs in, one logit per pair out.

Used by the server, export parity, the local shadow teacher, labelling with ONNX teachers and
the benchmarks, so that all of them tokenize, batch and pad the same way:

- `onnx_session` opens every ONNX Runtime session of the project with the same options;
- `PairScorer` tokenizes (`tokenize`), deals the pairs of one or several requests, in length order,
  to its lanes and cuts each lane into length-sorted sub-batches of at most `max_batch_pairs`, each
  padded only to its own longest pair (`prepare`; the cut minimises padded tokens plus a measured
  per-run overhead), and runs the model on them (`run_prepared`): the sub-batches wait in one queue,
  longest first, and each goes to whichever lane is free, so a lane slowed by other work on its core
  holds up no other, and the sub-batches of the next batch start while the last ones of this batch
  finish. Nothing else happens on the lanes' threads.

The model behind a lane is any `Runner` (`run(feeds) -> logits`): ONNX Runtime here, a Triton
client in the server, or a PyTorch module in training, which scores through this same policy.
In-process ONNX models get `DEFAULT_LANES` sessions that split the cores between them: on small
matrices two single-threaded runs side by side finish sooner than one run on two threads, which
waits for its second thread at every operator.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from .model_repo import ModelEntry
from .pair_tokenizer import EncodedBatch, PairTokenizer, TokenizedPairs

if TYPE_CHECKING:
    import onnxruntime

DEFAULT_MAX_BATCH_PAIRS = 256  # pairs in one model run
# ONNX Runtime sessions run side by side, the cores split between them. Measured on 2 cores (bare
# ONNX Runtime, 60 requests of 100 BM25 candidates, the committed 2 × 128 student): p50 9.0 → 7.3 ms
# int8, 11.4 → 9.8 ms fp32 for two 1-thread sessions against one 2-thread session.
DEFAULT_LANES = 2
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


def onnx_runners(path: str | Path, threads: int | None = None, lanes: int | None = None) -> list[OnnxRunner]:
    """One session per lane, `threads` (default: all cores) split between them; `lanes` defaults to
    `DEFAULT_LANES`, never more than the threads."""
    threads = threads or os.cpu_count() or 1
    lanes = min(lanes or DEFAULT_LANES, threads)
    return [OnnxRunner(path, threads // lanes) for _ in range(lanes)]


@dataclass
class PreparedBatch:
    """Requests' pairs dealt into a share per lane and cut into padded sub-batches, ready for the model
    (any lane may run any sub-batch)."""

    lanes: list[list[tuple[np.ndarray, EncodedBatch]]]  # per share: (rows of the concatenated pairs, padded batch)
    sizes: list[int]  # pairs per request, in order

    @property
    def pairs(self) -> int:
        return sum(self.sizes)

    @property
    def chunks(self) -> list[tuple[np.ndarray, EncodedBatch]]:
        """Every sub-batch, share after share."""
        return [chunk for lane in self.lanes for chunk in lane]


class PairScorer:
    def __init__(self, tokenizer: PairTokenizer, runners: Runner | list[Runner],
                 max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS, run_overhead_tokens: float = DEFAULT_RUN_OVERHEAD_TOKENS):
        """`runners`: one per lane (the same model each)."""
        self.tokenizer = tokenizer
        self.runners = list(runners) if isinstance(runners, (list, tuple)) else [runners]
        self.max_batch_pairs = max_batch_pairs
        self.run_overhead_tokens = run_overhead_tokens
        self.max_chars = tokenizer.max_length * CHARS_PER_TOKEN_BOUND
        # a thread per lane, each with a runner of its own, taking sub-batches from the pool's one queue
        self._unassigned = list(self.runners)
        self._lane = threading.local()
        self._lanes = concurrent.futures.ThreadPoolExecutor(len(self.runners), thread_name_prefix="lane")

    @property
    def runner(self) -> Runner:
        """The first lane's runner (every lane runs the same model)."""
        return self.runners[0]

    @classmethod
    def onnx(cls, onnx_path: str | Path, tokenizer: PairTokenizer, threads: int | None = None,
             max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS, lanes: int | None = None) -> "PairScorer":
        return cls(tokenizer, onnx_runners(onnx_path, threads, lanes), max_batch_pairs)

    @classmethod
    def for_entry(cls, entry: ModelEntry, threads: int | None = None,
                  max_batch_pairs: int = DEFAULT_MAX_BATCH_PAIRS, lanes: int | None = None) -> "PairScorer":
        """A model entry of `model_repo/` (its tokenizer and ONNX file), run in-process."""
        return cls.onnx(entry.onnx_path, PairTokenizer.from_file(entry.tokenizer_path, entry.max_length),
                        threads, max_batch_pairs, lanes)

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
        """The pairs dealt in length order into a share per lane (each share the same mix of lengths),
        each share cut into padded sub-batches; `run_prepared` gives any sub-batch to any free lane."""
        pairs = TokenizedPairs.concat(requests)
        order = np.argsort(pairs.lengths, kind="stable")
        lanes = []
        for lane in range(min(len(self.runners), len(pairs))):
            rows = order[lane::len(self.runners)]
            lanes.append([(rows[chunk], batch) for chunk, batch in
                          pairs.subset(rows).chunks(self.max_batch_pairs, self.run_overhead_tokens)])
        return PreparedBatch(lanes, [len(r) for r in requests])

    def run_prepared(self, batch: PreparedBatch) -> list[np.ndarray]:
        """The model on each sub-batch, longest first, on whichever lane is free; one logits array per
        request, in the pairs' order. Safe to call from several threads: their sub-batches share the lanes."""
        logits = np.empty(batch.pairs, dtype=np.float32)
        chunks = sorted(batch.chunks, key=lambda chunk: chunk[1].input_ids.size, reverse=True)
        runs = [(rows, self._lanes.submit(self._run_on_lane, encoded)) for rows, encoded in chunks]
        for rows, run in runs:
            logits[rows] = run.result()
        return np.split(logits, np.cumsum(batch.sizes)[:-1])

    def _run_on_lane(self, encoded: EncodedBatch) -> np.ndarray:
        # A lane thread takes its runner on its first sub-batch (not in a pool initializer: the pool's
        # threads would hold the scorer for good, and it, its sessions and threads would never be freed).
        runner = getattr(self._lane, "runner", None) or self._take_runner()
        return runner.run(encoded.as_feeds())

    def _take_runner(self) -> Runner:
        self._lane.runner = self._unassigned.pop()
        return self._lane.runner

    def run(self, pairs: TokenizedPairs) -> np.ndarray:
        return self.run_prepared(self.prepare([pairs]))[0]

    def score(self, queries: list[str], documents: list[str]) -> np.ndarray:
        """One logit per pair, in order."""
        return self.run(self.tokenize(queries, documents))
