"""Replaying early-stopping rules on logged curves gives what a real run with that rule gives."""

import pytest
import torch

from rankstill.distill.seqrec.data import SeqData, load_movielens, write_log_dataset
from rankstill.distill.seqrec.models import SeqShape, build_model
from rankstill.distill.seqrec.study import chosen_epoch
from rankstill.distill.seqrec.train import TrainConfig, train

from conftest import MOVIELENS


def test_chosen_epoch_by_hand():
    curve = [{"epoch": e, "ndcg@20": v} for e, v in enumerate([0.1, 0.3, 0.2, 0.25, 0.28, 0.5, 0.1], 1)]
    assert chosen_epoch(curve, patience=3, cap=10)["epoch"] == 2  # epochs 3, 4, 5 bring nothing better
    assert chosen_epoch(curve, patience=4, cap=10)["epoch"] == 6
    assert chosen_epoch(curve, patience=4, cap=5)["epoch"] == 2


def test_replayed_rule_matches_a_run_with_that_rule(tmp_path):
    log, catalogue = load_movielens(MOVIELENS)
    write_log_dataset(log[log["user"] <= 40], catalogue, tmp_path / "data")
    data = SeqData.open(tmp_path / "data")
    reports = {}
    for name, patience in (("short", 1), ("long", 10)):
        torch.manual_seed(0)
        model = build_model(SeqShape(kind="gru4rec", num_items=data.num_items, hidden=16))
        _, reports[name] = train(model, data.split("train"), data.split("valid"),
                                 TrainConfig(epochs=6, patience=patience, lr=3e-3), progress=False, watch=data.split("test"))
    long_epochs = reports["long"]["epochs"]
    assert len(long_epochs) == 6 and all("watch" in e for e in long_epochs)
    for short, long in zip(reports["short"]["epochs"], long_epochs):  # the same trajectory until the short run stops
        assert short["ndcg@20"] == pytest.approx(long["ndcg@20"]) and short["loss"] == pytest.approx(long["loss"])
    assert chosen_epoch(long_epochs, patience=1, cap=6)["epoch"] == reports["short"]["best_epoch"]
