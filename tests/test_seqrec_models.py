"""SASRec / GRU4Rec / Caser, embedding folding, training and distillation on small slices of MovieLens."""

import numpy as np
import pytest
import torch

from rankstill.distill.seqrec.data import SeqDataset
from rankstill.distill.seqrec.evaluate import evaluate, ranking_metrics
from rankstill.distill.seqrec.models import SeqShape, build_model
from rankstill.distill.seqrec.teacher import TeacherEnsemble, load_interchange, write_interchange
from rankstill.distill.seqrec.train import TrainConfig, train


def head(data: SeqDataset, rows: int) -> SeqDataset:
    return SeqDataset(data.history[:rows], data.lengths[:rows], data.targets[:rows], data.pad_id)


@pytest.mark.parametrize("tie_output", [False, True])
@pytest.mark.parametrize("kind", ["sasrec", "gru4rec", "caser"])
def test_scores_do_not_depend_on_batch_neighbours_and_survive_folding(kind, tie_output, seq_data):
    torch.manual_seed(0)
    external = torch.randn(seq_data.num_items, 16)
    shape = SeqShape(kind=kind, num_items=seq_data.num_items, hidden=32, text_dim=16, tie_output=tie_output)
    model = build_model(shape, external, 0.7).eval()
    rows = head(seq_data.split("valid"), 8)
    history, lengths = torch.as_tensor(rows.history), torch.as_tensor(rows.lengths)
    with torch.no_grad():
        batch = model(history, lengths)
        single = model(history[3:4], lengths[3:4])
        model.item_input.fold()
        folded = model(history, lengths)
    assert batch.shape == (8, seq_data.num_items)
    assert torch.allclose(batch[3], single[0], atol=1e-5)
    assert torch.allclose(batch, folded, atol=1e-5)
    assert model.item_input.projector is None
    assert hasattr(model, "output") != tie_output  # tied: no output layer of its own, the input table scores
    if tie_output:
        assert torch.equal(model.output_layer()[0], model.item_input.ids.weight[:-1])


def test_metrics_by_hand():
    top = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 6]])
    targets = np.array([3, 0, 7])
    metrics = ranking_metrics(top, targets, cutoffs=(1, 3))
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@3"] == pytest.approx(2 / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 / np.log2(3) + 1) / 3)


@pytest.fixture(scope="module")
def small_teacher(seq_data, tmp_path_factory):
    torch.manual_seed(0)
    train_rows, valid = head(seq_data.split("train"), 6000), head(seq_data.split("valid"), 1000)
    model = build_model(SeqShape(kind="sasrec", num_items=seq_data.num_items, hidden=32))
    untrained = evaluate(model, valid)
    model, report = train(model, train_rows, valid, TrainConfig(loss="ce", epochs=3, patience=3), progress=False)
    folder = tmp_path_factory.mktemp("seq-teacher")
    write_interchange(folder, TeacherEnsemble([model]), seq_data.split("train"), seq_data.split("test"), 10, {"teacher_id": "tiny"})
    return folder, untrained, report, model


def test_training_beats_an_untrained_model_and_picks_the_best_validation_epoch(small_teacher):
    _, untrained, report, _ = small_teacher
    assert report["valid"]["hr@20"] > 3 * untrained["hr@20"]
    assert report["valid"]["ndcg@20"] == max(epoch["ndcg@20"] for epoch in report["epochs"])


def test_ranking_distillation_moves_the_student_towards_the_teacher(small_teacher, seq_data):
    folder, *_ = small_teacher
    teacher = load_interchange(folder, seq_data)
    rows = 6000
    targets = type(teacher.targets)(teacher.targets.candidates[:rows], teacher.targets.distances[:rows])
    train_rows, valid = head(seq_data.split("train"), rows), head(seq_data.split("valid"), 1000)
    overlaps = {}
    for name, weight in (("alone", 0.0), ("distilled", 0.8)):
        torch.manual_seed(1)
        student = build_model(SeqShape(kind="gru4rec", num_items=seq_data.num_items, hidden=32))
        student, _ = train(student, train_rows, valid, TrainConfig(epochs=2, distill_weight=weight), targets, progress=False)
        overlaps[name] = evaluate(student, seq_data.split("test"), teacher.test_top)["overlap@20"]
    assert overlaps["distilled"] > overlaps["alone"] + 0.05, overlaps


def test_an_ensemble_of_one_model_with_itself_writes_that_models_outputs(small_teacher, seq_data, tmp_path):
    from rankstill.distill.seqrec.teacher import CONFIDENCE_FILE, EMBEDDINGS_FILE, RANKS_FILE

    folder, *_, model = small_teacher
    write_interchange(tmp_path, TeacherEnsemble([model, model]), seq_data.split("train"), seq_data.split("test"), 10, {})
    assert (np.loadtxt(tmp_path / RANKS_FILE) == np.loadtxt(folder / RANKS_FILE)).all()
    assert np.allclose(np.loadtxt(tmp_path / CONFIDENCE_FILE), np.loadtxt(folder / CONFIDENCE_FILE), atol=1e-4)
    single, double = torch.load(folder / EMBEDDINGS_FILE), torch.load(tmp_path / EMBEDDINGS_FILE)
    assert double.shape == (seq_data.num_items, 2 * single.shape[1]) and torch.equal(double[:, single.shape[1]:], single)


def test_seq_teacher_trains_an_ensemble_and_writes_its_outputs(tmp_path):
    import json

    from typer.testing import CliRunner

    from rankstill.cli import app
    from rankstill.distill.seqrec.data import SeqData, load_movielens, write_log_dataset
    from rankstill.distill.seqrec.stage import load_teacher

    from conftest import MOVIELENS

    log, catalogue = load_movielens(MOVIELENS)
    write_log_dataset(log[log["user"] <= 30], catalogue, tmp_path / "data")
    out = tmp_path / "teacher"
    result = CliRunner().invoke(app, ["seq", "teacher", "--data", str(tmp_path / "data"), "--out", str(out), "--hidden", "16",
                                      "--heads", "1", "--epochs", "2", "--members", "2", "--seed", "5", "--k", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [5, 6]
    assert (out / "member-5" / "model.pt").is_file() and (out / "member-6" / "model.pt").is_file()
    data = SeqData.open(tmp_path / "data")
    teacher = load_teacher(out)
    assert len(teacher.members) == 2
    assert report["test"] == pytest.approx(evaluate(teacher, data.split("test")))
    outputs = load_interchange(out, data)
    assert outputs.embeddings.shape == (data.num_items, 32) and outputs.targets.candidates.shape == (len(data.split("train")), 4)
    assert outputs.info["teacher_id"] == "text-sasrec-16x2-ensemble2" and outputs.info["member_seeds"] == [5, 6]
    assert (outputs.targets.distances >= 0).all()


def test_import_checks_row_alignment_and_id_range(small_teacher, seq_data, tmp_path):
    from rankstill.distill.seqrec.teacher import (CONFIDENCE_FILE, EMBEDDINGS_FILE, RANKS_FILE, import_interchange)

    folder, *_ = small_teacher
    ranks = np.loadtxt(folder / RANKS_FILE, dtype=np.int64)
    files = {"embeddings": folder / EMBEDDINGS_FILE, "ranks": folder / RANKS_FILE, "confidence": folder / CONFIDENCE_FILE}

    short = tmp_path / "short.txt"
    np.savetxt(short, ranks[:-1], fmt="%d")
    with pytest.raises(ValueError, match="rows must align"):
        import_interchange(**{**files, "ranks": short}, data=seq_data, out=tmp_path / "a", teacher_id="x")
    assert not (tmp_path / "a").exists()  # nothing is written before the files pass

    out_of_range = tmp_path / "range.txt"
    bad = ranks.copy()
    bad[7, 3] = seq_data.num_items
    np.savetxt(out_of_range, bad, fmt="%d")
    with pytest.raises(ValueError, match="item ids must lie in 0..1681"):
        import_interchange(**{**files, "ranks": out_of_range}, data=seq_data, out=tmp_path / "b", teacher_id="x")

    wrong_items = tmp_path / "embeddings.pt"
    torch.save(torch.zeros(seq_data.num_items - 1, 8), wrong_items)
    with pytest.raises(ValueError, match="one row per item"):
        import_interchange(**{**files, "embeddings": wrong_items}, data=seq_data, out=tmp_path / "c", teacher_id="x")

    imported = import_interchange(**files, data=seq_data, out=tmp_path / "ok", teacher_id="bigrec")
    assert (imported.targets.candidates == ranks).all()
    assert load_interchange(tmp_path / "ok", seq_data).info["teacher_id"] == "bigrec"


@pytest.mark.parametrize("kind,tie_output", [("sasrec", False), ("gru4rec", False), ("caser", False), ("sasrec", True)])
def test_every_student_exports_to_onnx_with_parity(kind, tie_output, seq_data, tmp_path):
    from rankstill.distill.seqrec.stage import save_checkpoint
    from rankstill.export.seq_export import export_recommender
    from rankstill.model_repo import default_model_name, load_model

    torch.manual_seed(0)
    model = build_model(SeqShape(kind=kind, num_items=seq_data.num_items, hidden=16, tie_output=tie_output)).eval()
    save_checkpoint(model, tmp_path / "student", {"valid": {}, "test": {}})
    metadata = export_recommender(tmp_path / "student", seq_data.folder, tmp_path / "repo", f"rec-{kind}", True, parity_rows=256)
    assert metadata["parity"]["onnx_vs_pytorch"]["passed"]
    assert default_model_name(tmp_path / "repo", "recommend") == f"rec-{kind}"
    assert load_model(tmp_path / "repo", task="recommend").metadata["window"] == seq_data.window


def test_table_with_seeds_reports_mean_std_and_paired_gains(tmp_path):
    """`seq table --seeds 2` on a small slice of MovieLens: every row twice, mean ± std, gain paired by seed."""
    import json

    from rankstill.distill.seqrec.data import SeqData, load_movielens, write_log_dataset
    from rankstill.distill.seqrec.stage import comparison_table

    from conftest import MOVIELENS

    log, catalogue = load_movielens(MOVIELENS)
    write_log_dataset(log[log["user"] <= 30], catalogue, tmp_path / "data")
    data = SeqData.open(tmp_path / "data")
    torch.manual_seed(0)
    teacher = build_model(SeqShape(kind="sasrec", num_items=data.num_items, hidden=16))
    teacher, _ = train(teacher, data.split("train"), data.split("valid"), TrainConfig(loss="ce", epochs=1), progress=False)
    write_interchange(tmp_path / "teacher", TeacherEnsemble([teacher]), data.split("train"), data.split("test"), 5,
                      {"teacher_id": "tiny", "test": evaluate(teacher, data.split("test")), "valid": {"hr@20": 0.0}})
    rows = comparison_table(tmp_path / "data", tmp_path / "teacher", tmp_path / "table", ["gru4rec"], ["alone", "dllm2rec"],
                            SeqShape(hidden=16), TrainConfig(epochs=1, patience=1, distill_weight=0.5, seed=3), 0.3, seeds=2)
    table = json.loads((tmp_path / "table" / "table.json").read_text())
    runs = {(r["variant"], r["seed"]): r for r in table["runs"]}
    assert set(runs) == {("alone", 3), ("alone", 4), ("dllm2rec", 3), ("dllm2rec", 4)}
    assert runs[("alone", 3)]["distill_weight"] == 0 and runs[("dllm2rec", 3)]["distill_weight"] == 0.5
    assert runs[("alone", 3)]["embed_weight"] == 0 and runs[("dllm2rec", 4)]["embed_weight"] == 0.3
    distilled = next(r for r in rows if r["variant"] == "dllm2rec")
    hr = [runs[("dllm2rec", s)]["test"]["hr@20"] for s in (3, 4)]
    assert distilled["hr@20"] == pytest.approx(np.mean(hr)) and distilled["hr@20_std"] == pytest.approx(np.std(hr, ddof=1))
    gains = [runs[("dllm2rec", s)]["test"]["hr@20"] / runs[("alone", s)]["test"]["hr@20"] - 1 for s in (3, 4)]
    assert distilled["gain_hr@20"] == pytest.approx(np.mean(gains))
    assert (tmp_path / "table" / "gru4rec-dllm2rec-seed4" / "model.pt").is_file()
    markdown = (tmp_path / "table" / "table.md").read_text()
    assert "over 2 seed(s)" in markdown and f"{distilled['hr@20']:.4f} ± {distilled['hr@20_std']:.4f}" in markdown
    assert "Teacher tiny" in markdown
    alone = next(r for r in rows if r["variant"] == "alone")
    assert alone["valid_hr@20"] > 0 and "validation HR@20 (0.0000) is below gru4rec alone" in markdown  # a weak teacher is flagged
    # Rows alone need no teacher, and train exactly as beside one; distilled rows without one are refused.
    settings = (SeqShape(hidden=16), TrainConfig(epochs=1, patience=1, distill_weight=0.5, seed=3), 0.3)
    bare = comparison_table(tmp_path / "data", tmp_path / "no-teacher", tmp_path / "bare", ["gru4rec"], ["alone"], *settings)
    assert bare[0]["hr@20"] == runs[("alone", 3)]["test"]["hr@20"] and "overlap@20" not in bare[0]
    with pytest.raises(ValueError, match="no teacher"):
        comparison_table(tmp_path / "data", tmp_path / "no-teacher", tmp_path / "bare", ["gru4rec"], ["dllm2rec"], *settings)


@pytest.mark.parametrize("kind,tie_output", [("sasrec", False), ("caser", False), ("gru4rec", True)])
def test_training_loss_on_gathered_scores_equals_the_loss_on_all_scores(kind, tie_output):
    from dataclasses import replace

    from rankstill.distill.seqrec.losses import DistillWeights, bce_sampled, listwise_distillation, ranking_distillation
    from rankstill.distill.seqrec.train import _loss

    torch.manual_seed(0)
    external = torch.randn(300, 8)
    shape = SeqShape(kind=kind, num_items=300, hidden=16, text_dim=8, tie_output=tie_output)
    model = build_model(shape, external).eval()  # eval: no dropout noise
    history = torch.randint(0, 300, (32, 10))
    lengths, targets = torch.full((32,), 10), torch.randint(0, 300, (32,))
    candidates, distances = torch.randint(0, 300, (32, 5)), torch.rand(32, 5)
    config = TrainConfig(distill_weight=0.7, distill=DistillWeights(0.3, 0.5, 0.4))
    fast = _loss(model, (history, lengths, targets), config, torch.Generator().manual_seed(1), None, (candidates, distances))
    generator = torch.Generator().manual_seed(1)
    negatives = (targets + torch.randint(1, 300, targets.shape, generator=generator)) % 300
    scores = model(history, lengths)
    full = bce_sampled(scores, targets, negatives) + 0.7 * ranking_distillation(scores, candidates, distances, config.distill)
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    # With the listwise term beside the ranking term, over the first K 3 of the teacher's candidates.
    config = replace(config, candidates=3, listwise_weight=0.4, listwise_temperature=2.0)
    fast = _loss(model, (history, lengths, targets), config, torch.Generator().manual_seed(1), None,
                 (candidates[:, :3], distances[:, :3]))
    full = (bce_sampled(scores, targets, negatives)
            + 0.7 * ranking_distillation(scores, candidates[:, :3], distances[:, :3], config.distill)
            + 0.4 * listwise_distillation(scores.gather(1, candidates[:, :3]), distances[:, :3], 2.0))
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)


@pytest.mark.parametrize("dros_weight", [0.0, 0.2])
def test_distill_negative_pairs_every_candidate_with_the_rows_negative(dros_weight):
    """DLLM2Rec's code: each candidate c_k gets a BCE against the row's sampled negative, weighted by w_k."""
    from dataclasses import replace

    import torch.nn.functional as F

    from rankstill.distill.seqrec.losses import DistillWeights, bce_sampled, candidate_weights, dros
    from rankstill.distill.seqrec.train import _loss

    torch.manual_seed(0)
    model = build_model(SeqShape(kind="gru4rec", num_items=300, hidden=16)).eval()
    history = torch.randint(0, 300, (32, 10))
    lengths, targets = torch.full((32,), 10), torch.randint(0, 300, (32,))
    candidates, distances = torch.randint(0, 300, (32, 5)), torch.rand(32, 5)
    propensity = torch.rand(300) / 300
    config = TrainConfig(distill_weight=0.7, distill=DistillWeights(0.3, 0.5, 0.4), distill_negative=True, dros_weight=dros_weight)
    paired = _loss(model, (history, lengths, targets), config, torch.Generator().manual_seed(1), propensity, (candidates, distances))
    generator = torch.Generator().manual_seed(1)
    negatives = (targets + torch.randint(1, 300, targets.shape, generator=generator)) % 300
    scores = model(history, lengths)
    w = candidate_weights(scores, candidates, distances, config.distill)
    per_candidate = -(F.logsigmoid(scores.gather(1, candidates)) + F.logsigmoid(-scores.gather(1, negatives[:, None])))
    expected = bce_sampled(scores, targets, negatives) + 0.7 * (w * per_candidate).sum(1).mean()
    if dros_weight:
        expected = expected + dros_weight * dros(scores, targets, propensity)
    assert paired.item() == pytest.approx(expected.item(), rel=1e-5)
    unpaired = _loss(model, (history, lengths, targets), replace(config, distill_negative=False),
                     torch.Generator().manual_seed(1), propensity, (candidates, distances))
    assert paired.item() > unpaired.item()  # the extra negative terms are positive
