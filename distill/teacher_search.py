"""`rankstill teacher search`: choose the teacher's configuration by validation NDCG@10 under a time budget.

Optuna's TPE sampler proposes a configuration (backbone depth, learning rate, epochs, max length); each
trial fine-tunes it and reports validation NDCG@10 on a fixed subset of validation queries a few times
during training, so that the successive-halving pruner stops configurations that trail the others early.
A trial that completes is scored on all validation queries, and its labelling cost (pairs per second
when scoring them) is measured in the same pass: a deeper or longer teacher must earn its cost.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .bm25 import TitleIndex, bm25_scores_for
from .dataset import Dataset
from .evaluate import ranking_report
from .teacher import HFTeacher, fine_tune


@dataclass(frozen=True)
class SearchSpace:
    layers: tuple[int, ...] = (2, 3, 4, 6)
    lr: tuple[float, float] = (1e-5, 3e-4)
    epochs: tuple[float, float] = (0.5, 3.0)
    max_lengths: tuple[int, ...] = (32, 48, 64, 96)


def keep_first_layers(teacher: HFTeacher, layers: int) -> None:
    """Cut an encoder teacher to its first `layers` transformer layers (a cheaper teacher to label with)."""
    encoder = getattr(teacher.model.base_model, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise ValueError(f"cannot choose the depth of {teacher.path}: only encoder (BERT-like) backbones can be cut")
    if not 1 <= layers <= len(encoder.layer):
        raise ValueError(f"the backbone has {len(encoder.layer)} layers; cannot keep {layers}")
    encoder.layer = encoder.layer[:layers]
    teacher.model.config.num_hidden_layers = layers


def validation_ndcg(teacher: HFTeacher, frame: pd.DataFrame) -> tuple[float, float]:
    """Validation NDCG@10 of the teacher's scores, and its scoring speed in pairs per second."""
    began = time.perf_counter()
    scores = teacher.score(list(frame["query"]), list(frame["item_text"]))
    seconds = time.perf_counter() - began
    report = ranking_report(frame.assign(teacher=scores), ["teacher"])
    return report["ndcg@10"]["teacher"], len(frame) / seconds


def search_teachers(data: Dataset, out: Path, backbone: Path, teacher_id: str, budget_minutes: float,
                    trials: int, space: SearchSpace = SearchSpace(), batch_size: int = 32,
                    checks: int = 4, check_queries: int = 300, seed: int = 0) -> dict:
    """Run the search; the best teacher is saved to OUT/best, every trial to OUT/search.json, and
    quality against labelling cost to OUT/search.png."""
    import optuna

    if not data.has_judgments:
        raise ValueError("a teacher search needs judgments (data.judgments): it picks the teacher by validation NDCG")
    train = data.judgments[data.judgments["split"] == "train"]
    validation = data.judgments[data.judgments["split"] == "validation"].reset_index(drop=True)
    if train.empty or validation.empty:
        raise ValueError("a teacher search needs judged train and validation queries")
    check_set = validation[validation["query"].isin(validation["query"].drop_duplicates().head(check_queries))]
    out.mkdir(parents=True, exist_ok=True)
    best_ndcg = -np.inf

    def objective(trial: optuna.Trial) -> float:
        config = {"layers": trial.suggest_categorical("layers", list(space.layers)),
                  "lr": trial.suggest_float("lr", *space.lr, log=True),
                  "epochs": trial.suggest_float("epochs", *space.epochs),
                  "max_length": trial.suggest_categorical("max_length", list(space.max_lengths))}
        teacher = HFTeacher(backbone, max_length=config["max_length"])
        keep_first_layers(teacher, config["layers"])
        check_steps: set[int] = set()

        def check(step: int, total: int) -> None:
            if not check_steps:
                check_steps.update(max(1, round(total * (i + 1) / checks)) for i in range(checks - 1))
            if step in check_steps:
                trial.report(validation_ndcg(teacher, check_set)[0], step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

        began = time.perf_counter()
        fine_tune(teacher, list(train["query"]), list(train["item_text"]), train["gain"].to_numpy(),
                  epochs=config["epochs"], batch_size=batch_size, lr=config["lr"], seed=seed,
                  progress=False, after_step=check)
        ndcg, pairs_per_second = validation_ndcg(teacher, validation)
        trial.set_user_attr("train_seconds", round(time.perf_counter() - began, 1))
        trial.set_user_attr("pairs_per_second", round(pairs_per_second, 1))
        nonlocal best_ndcg
        if ndcg > best_ndcg:
            best_ndcg = ndcg
            teacher.save(out / "best", teacher_id, {"stage": "teacher-search", "trial": trial.number,
                                                    "validation_ndcg@10": ndcg, **config})
        return ndcg

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.SuccessiveHalvingPruner())
    study.optimize(objective, n_trials=trials, timeout=budget_minutes * 60, show_progress_bar=True)

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError(f"no trial completed within {budget_minutes} minutes: raise --budget-minutes")
    index = TitleIndex(list(data.items["item_id"]), list(data.items["item_text"]))
    baselines = ranking_report(validation.assign(bm25=bm25_scores_for(validation, index, "item_id")), ["bm25"])
    result = {
        "space": asdict(space), "budget_minutes": budget_minutes, "check_queries": int(check_set["query"].nunique()),
        "validation_queries": int(validation["query"].nunique()),
        "validation_ndcg@10": {name: baselines["ndcg@10"][name] for name in ("random", "bm25")},
        "best": {"trial": study.best_trial.number, "validation_ndcg@10": study.best_value,
                 **study.best_trial.params, **study.best_trial.user_attrs, "checkpoint": str(out / "best")},
        "trials": [{"trial": t.number, "state": t.state.name, "validation_ndcg@10": t.value, **t.params,
                    **t.user_attrs, "checks": {int(step): value for step, value in t.intermediate_values.items()}}
                   for t in study.trials],
    }
    (out / "search.json").write_text(json.dumps(result, indent=2))
    plot_search(result, out / "search.png")
    return result


def plot_search(result: dict, png: Path) -> Path:
    """Completed trials: validation NDCG@10 against labelling cost (seconds per 100k pairs), BM25 for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in result["trials"] if t["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(6, 4))
    cost = [100_000 / t["pairs_per_second"] for t in done]
    ax.scatter(cost, [t["validation_ndcg@10"] for t in done], c=[t["layers"] for t in done], cmap="viridis")
    for t, x in zip(done, cost):
        ax.annotate(f"{t['layers']}L/{t['max_length']}", (x, t["validation_ndcg@10"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.axhline(result["validation_ndcg@10"]["bm25"], linestyle=":", color="grey", label="BM25")
    ax.set_xlabel("labelling cost: seconds per 100k pairs (this machine)")
    ax.set_ylabel("teacher validation NDCG@10")
    ax.set_title(f"teacher search: {len(done)} of {len(result['trials'])} trials completed (rest pruned)", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
