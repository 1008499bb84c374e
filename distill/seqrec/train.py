"""Training loop shared by the teacher (full softmax) and the students (BCE [+ DROS] [+ DLLM2Rec])."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import SeqDataset
from .evaluate import evaluate
from .losses import DistillWeights, bce_sampled, candidate_weights, dros, listwise_distillation, weighted_candidate_loss
from .models import SeqRecommender


@dataclass
class TrainConfig:
    loss: str = "bce"  # bce: one sampled negative (the students); ce: softmax over all items (the teacher)
    epochs: int = 40
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@20 before stopping
    dros_weight: float = 0.0
    distill_weight: float = 0.0  # λ of L_rec + λ L_distill; 0: no ranking distillation
    distill: DistillWeights = field(default_factory=DistillWeights)
    candidates: int = 0  # K: the teacher's first K candidates per row are distilled (0: all it gave)
    distill_negative: bool = False  # pair each distilled candidate with the row's sampled negative, as DLLM2Rec's
    # code does: Σ_k w_k BCE(c_k, negative); the weights sum to 1, so the negative's term then weighs 1 + λ
    listwise_weight: float = 0.0  # μ of + μ L_listwise: KL from the teacher's softmax over the same K candidates; 0: off
    listwise_temperature: float = 1.0
    seed: int = 0
    threads: int = 1  # torch intra-op threads while training: these models are small, and on a shared 2-core
    # machine two threads that wait on each other ran up to 10× slower than one (measured)

    @property
    def reads_teacher_ranks(self) -> bool:
        """Whether a term reads the teacher's candidates (the ranking or the listwise term)."""
        return bool(self.distill_weight or self.listwise_weight)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TeacherTargets:
    """The teacher's top-K candidates and their distances for every training row."""

    candidates: np.ndarray  # [rows, K] item ids
    distances: np.ndarray  # [rows, K]


def item_propensity(train: SeqDataset) -> torch.Tensor:
    counts = np.bincount(train.targets, minlength=train.pad_id).astype(np.float32)
    return torch.from_numpy(counts / counts.sum())


def _distill_terms(candidate_scores, distances, negative_scores, config, w):
    """λ L_distill + μ L_listwise of a batch, from the scores of the teacher's K candidates ([batch, K])."""
    loss = candidate_scores.new_zeros(())
    if config.distill_weight:
        paired = negative_scores if config.distill_negative else None
        loss = loss + config.distill_weight * weighted_candidate_loss(candidate_scores, w, paired)
    if config.listwise_weight:
        loss = loss + config.listwise_weight * listwise_distillation(candidate_scores, distances, config.listwise_temperature)
    return loss


def _loss(model: SeqRecommender, batch, config: TrainConfig, generator, propensity, teacher_batch):
    history, lengths, targets = batch
    num_items = model.shape.num_items
    if config.loss == "ce":
        return F.cross_entropy(model(history, lengths), targets)
    negatives = (targets + torch.randint(1, num_items, targets.shape, generator=generator)) % num_items
    if config.dros_weight:  # DROS reads every item's score
        scores = model(history, lengths)
        loss = bce_sampled(scores, targets, negatives) + config.dros_weight * dros(scores, targets, propensity)
        if teacher_batch is not None:
            candidates, distances = teacher_batch
            w = candidate_weights(scores, candidates, distances, config.distill) if config.distill_weight else None
            loss = loss + _distill_terms(scores.gather(1, candidates), distances,
                                         scores.gather(1, negatives[:, None]).squeeze(1), config, w)
        return loss
    # Only the scores the loss reads go through the output layer with gradients: the same loss, less work.
    state = model.state(history, lengths)
    items = torch.stack([targets, negatives], 1)
    if teacher_batch is not None:
        items = torch.cat([items, teacher_batch[0]], 1)
    scores = model.score_items(state, items)
    loss = -(F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1])).mean()  # = bce_sampled
    if teacher_batch is not None:
        candidates, distances = teacher_batch
        w = None
        if config.distill_weight:
            with torch.no_grad():  # the student's own top-K, for the consistency weight
                student_top = model.scores(state.detach()).topk(candidates.shape[1], dim=1).indices
            w = candidate_weights(None, candidates, distances, config.distill, student_top)
        loss = loss + _distill_terms(scores[:, 2:], distances, scores[:, 1], config, w)
    return loss


def train(model: SeqRecommender, train_data: SeqDataset, valid: SeqDataset, config: TrainConfig,
          teacher: TeacherTargets | None = None, progress: bool = True,
          watch: SeqDataset | None = None) -> tuple[SeqRecommender, dict]:
    """Train with early stopping on validation NDCG@20; returns the best epoch's model and a report.

    `watch` (a study tool): also evaluate these rows after every epoch and log them as the epoch's
    `watch` metrics; they never take part in choosing the epoch or stopping. With a long patience,
    the log shows what any shorter patience would have chosen (training does not depend on it)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(model, train_data, valid, config, teacher, progress, watch)
    finally:
        torch.set_num_threads(threads)


def _train(model, train_data, valid, config, teacher, progress, watch):
    distilling = config.reads_teacher_ranks
    if distilling and teacher is None:
        raise ValueError("ranking distillation needs the teacher's candidates (distill_weight or listwise_weight > 0)")
    if teacher is not None and len(teacher.candidates) != len(train_data):
        raise ValueError(f"teacher has {len(teacher.candidates)} rows, training data {len(train_data)}")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    propensity = item_propensity(train_data)
    history, lengths, targets = (torch.as_tensor(np.array(a)) for a in (train_data.history, train_data.lengths, train_data.targets))
    best = {"epoch": -1, "ndcg@20": -1.0}
    best_state, history_log, started = None, [], time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_data), generator=generator)
        total = 0.0
        for start in tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}", leave=False, disable=not progress):
            rows = order[start:start + config.batch_size]
            teacher_batch = None
            if teacher is not None and distilling:
                k = config.candidates or teacher.candidates.shape[1]
                teacher_batch = (torch.from_numpy(teacher.candidates[rows.numpy(), :k]),
                                 torch.from_numpy(teacher.distances[rows.numpy(), :k]))
            loss = _loss(model, (history[rows], lengths[rows], targets[rows]), config, generator, propensity, teacher_batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(rows)
        metrics = evaluate(model, valid)
        history_log.append({"epoch": epoch + 1, "loss": total / len(order), **metrics})
        if watch is not None:
            history_log[-1]["watch"] = evaluate(model, watch)
        if metrics["ndcg@20"] > best["ndcg@20"]:
            best = {"epoch": epoch + 1, **metrics}
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 - best["epoch"] >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": best["epoch"], "valid": best, "epochs": history_log,
                   "train_seconds": round(time.perf_counter() - started, 1), "config": config.to_dict()}
