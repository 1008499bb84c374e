import json

import pytest
from typer.testing import CliRunner

from rankstill.cli import app
from rankstill.distill.teacher import HFTeacher, default_backbone
from rankstill.distill.teacher_search import keep_first_layers


def test_search_picks_the_best_completed_trial_and_saves_that_teacher(data_path, tmp_path):
    out = tmp_path / "search"
    result = CliRunner().invoke(app, [
        "teacher", "search", "--data", str(data_path), "--out", str(out), "--max-queries", "12",
        "--trials", "4", "--budget-minutes", "10", "--layers", "1,2", "--max-lengths", "24,32",
        "--min-epochs", "0.5", "--max-epochs", "1.5", "--checks", "2", "--check-queries", "6"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "search.json").read_text())
    assert len(report["trials"]) == 4 and (out / "search.png").stat().st_size > 0
    complete = [t for t in report["trials"] if t["state"] == "COMPLETE"]
    best = max(complete, key=lambda t: t["validation_ndcg@10"])
    assert report["best"]["trial"] == best["trial"]
    for trial in report["trials"]:
        assert trial["layers"] in (1, 2) and trial["max_length"] in (24, 32)
        assert 0.5 <= trial["epochs"] <= 1.5 and len(trial["checks"]) >= 1  # every trial was checked mid-way
    for trial in complete:
        assert trial["pairs_per_second"] > 0
    saved = HFTeacher(out / "best")
    assert saved.model.config.num_hidden_layers == best["layers"] == len(saved.model.bert.encoder.layer)
    assert json.loads((out / "best" / "rankstill_teacher.json").read_text())["report"]["trial"] == best["trial"]


def test_depth_outside_the_backbone_is_refused():
    teacher = HFTeacher(default_backbone())
    with pytest.raises(ValueError, match="has 6 layers; cannot keep 7"):
        keep_first_layers(teacher, 7)
