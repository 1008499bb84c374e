"""The recommender teacher and DLLM2Rec's interchange files.

No LLM recommender weights exist offline, so the default teacher is the strongest text-aware model
buildable here: a wider SASRec whose item input adds all-MiniLM-L6-v2 embeddings of the titles
(semantic item embeddings, as an LLM's are), trained with a softmax over all items.

Interchange files (DLLM2Rec's names; BIGRec/LLM outputs can be imported in the same form):

    all_embeddings.pt      float tensor [num_items, d]: one embedding per item
    myrank_train.txt       one line per training row: the teacher's top-K item ids, best first
    confidence_train.txt   one line per training row: K distances (lower = closer)
    myrank_test.txt        optional, top-20 per test row (for teacher-student overlap@20)
    teacher.json           what produced them

A teacher may be an ensemble of several trained teachers (`TeacherEnsemble`): its scores are the mean
of theirs after log-softmax (a product of experts), its item embeddings theirs side by side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import SeqData, SeqDataset
from .evaluate import top_items
from .models import SeqRecommender
from .train import TeacherTargets

EMBEDDINGS_FILE = "all_embeddings.pt"
RANKS_FILE = "myrank_train.txt"
CONFIDENCE_FILE = "confidence_train.txt"
TEST_RANKS_FILE = "myrank_test.txt"
INFO_FILE = "teacher.json"


@torch.no_grad()
def title_embeddings(titles: list[str], backbone: Path, batch_size: int = 128) -> torch.Tensor:
    """Mean-pooled, L2-normalised sentence embeddings of item titles (all-MiniLM-L6-v2's recipe)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    encoder = AutoModel.from_pretrained(backbone).eval()
    chunks = []
    for start in range(0, len(titles), batch_size):
        batch = tokenizer(titles[start:start + batch_size], padding=True, truncation=True, max_length=32, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(chunks)


class TeacherEnsemble(nn.Module):
    """Several recommenders scoring as one: the mean of their log-softmax scores over all items."""

    def __init__(self, members: list[SeqRecommender]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.log_softmax(member(history, lengths), dim=1) for member in self.members]).mean(0)

    @torch.no_grad()
    def item_embeddings(self) -> torch.Tensor:
        """[num_items, sum of the members' widths]: each member's item-input table, side by side."""
        return torch.cat([member.item_input.table()[:-1] for member in self.members], dim=1)


def write_interchange(out: Path, teacher: TeacherEnsemble, train: SeqDataset, test: SeqDataset, k: int, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(teacher.item_embeddings(), out / EMBEDDINGS_FILE)  # a new tensor, not a view of a weight
    candidates, log_probs = top_items(teacher, train, k)
    np.savetxt(out / RANKS_FILE, candidates, fmt="%d")
    np.savetxt(out / CONFIDENCE_FILE, -log_probs, fmt="%.6f")  # distance = -log p(item) under the teacher
    np.savetxt(out / TEST_RANKS_FILE, top_items(teacher, test, 20)[0], fmt="%d")
    (out / INFO_FILE).write_text(json.dumps({**info, "num_items": teacher.members[0].shape.num_items, "k": k,
                                             "train_rows": len(train)}, indent=2))


@dataclass
class TeacherOutputs:
    embeddings: torch.Tensor  # [num_items, d]
    targets: TeacherTargets
    test_top: np.ndarray | None  # [test rows, 20]
    info: dict


def _read_matrix(path: Path, dtype) -> np.ndarray:
    try:
        return np.atleast_2d(np.loadtxt(path, dtype=dtype))
    except ValueError as error:
        raise ValueError(f"{path}: not a whitespace-separated matrix ({error})") from None


def load_interchange(folder: str | Path, data: SeqData) -> TeacherOutputs:
    """Read and check a teacher folder against the dataset."""
    folder = Path(folder)
    info_path = folder / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"teacher_id": folder.name}
    test_ranks = folder / TEST_RANKS_FILE
    return read_teacher_files(folder / EMBEDDINGS_FILE, folder / RANKS_FILE, folder / CONFIDENCE_FILE,
                              test_ranks if test_ranks.is_file() else None, data, info)


def read_teacher_files(embeddings_path: Path, ranks_path: Path, confidence_path: Path, test_ranks_path: Path | None,
                       data: SeqData, info: dict) -> TeacherOutputs:
    """Every mismatch with the dataset (row count, id range, shapes) fails with the reason."""
    for path in (embeddings_path, ranks_path, confidence_path):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} not found (a teacher gives {EMBEDDINGS_FILE}, {RANKS_FILE}, {CONFIDENCE_FILE})")
    n = data.num_items
    embeddings = torch.load(embeddings_path, map_location="cpu", weights_only=True)
    if not isinstance(embeddings, torch.Tensor) or embeddings.ndim != 2 or embeddings.shape[0] != n:
        shape = tuple(embeddings.shape) if isinstance(embeddings, torch.Tensor) else type(embeddings).__name__
        raise ValueError(f"{embeddings_path}: expected a [{n}, d] tensor (one row per item), got {shape}")
    candidates = _read_matrix(ranks_path, np.int64)
    distances = _read_matrix(confidence_path, np.float32)
    train_rows = len(data.split("train"))
    for path, matrix in ((ranks_path, candidates), (confidence_path, distances)):
        if matrix.shape[0] != train_rows:
            raise ValueError(f"{path}: {matrix.shape[0]} rows but the training split has {train_rows}: "
                             "rows must align one-to-one with train.csv")
    if candidates.shape != distances.shape:
        raise ValueError(f"{ranks_path} is {candidates.shape} but {confidence_path} is {distances.shape}")
    _check_ids(ranks_path, candidates, n)
    if not np.isfinite(distances).all():
        raise ValueError(f"{confidence_path}: distances must be finite")
    test_top = None
    if test_ranks_path is not None:
        test_top = _read_matrix(test_ranks_path, np.int64)
        _check_ids(test_ranks_path, test_top, n)
        if test_top.shape[0] != len(data.split("test")) or test_top.shape[1] < 20:
            raise ValueError(f"{test_ranks_path}: needs one row of at least 20 ids per test row")
    return TeacherOutputs(embeddings.float(), TeacherTargets(candidates, distances), test_top, info)


def _check_ids(path: Path, ids: np.ndarray, num_items: int) -> None:
    if ids.min() < 0 or ids.max() >= num_items:
        raise ValueError(f"{path}: item ids must lie in 0..{num_items - 1}, found {ids.min()}..{ids.max()}")


def import_interchange(embeddings: Path, ranks: Path, confidence: Path, data: SeqData, out: Path,
                       teacher_id: str, test_ranks: Path | None = None) -> TeacherOutputs:
    """Check user-supplied teacher outputs (e.g. BIGRec's), then copy them into a teacher folder."""
    import shutil

    info = {"teacher_id": teacher_id, "imported_from": str(Path(ranks).resolve().parent)}
    outputs = read_teacher_files(embeddings, ranks, confidence, test_ranks, data, info)
    out.mkdir(parents=True, exist_ok=True)
    for source, name in ((embeddings, EMBEDDINGS_FILE), (ranks, RANKS_FILE), (confidence, CONFIDENCE_FILE), (test_ranks, TEST_RANKS_FILE)):
        if source is not None:
            shutil.copyfile(source, out / name)
    (out / INFO_FILE).write_text(json.dumps({**info, "num_items": data.num_items,
                                             "k": int(outputs.targets.candidates.shape[1])}, indent=2))
    return outputs
