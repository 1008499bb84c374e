import concurrent.futures
import re
import threading

import numpy as np
import onnx
import pytest
import torch

from rankstill.distill.student import StudentShape, build_student, score_pairs
from rankstill.distill.teacher import default_backbone
from rankstill.export.onnx_export import INPUT_NAMES, OUTPUT_NAME, export_onnx, quantize_int8
from rankstill.export.parity import FP32_MAX_ABS_DIFF, ranking_parity
from rankstill.export.triton_repo import config_pbtxt, set_default, write_entry
from rankstill.model_repo import default_model_name, list_models, load_model
from rankstill.pair_tokenizer import PairTokenizer
from rankstill.scoring import PairScorer, onnx_runners, onnx_session

from conftest import FP32_MODEL, INT8_MODEL, MODEL_REPO

SHAPE = StudentShape(layers=2, hidden=64, heads=2, intermediate=128, max_length=48)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    student = build_student(SHAPE, default_backbone()).eval()
    tokenizer = PairTokenizer.from_file(default_backbone() / "tokenizer.json", SHAPE.max_length)
    path = export_onnx(student, tokenizer, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return student, tokenizer, path


def _validation_pairs(judgments, queries=40):
    validation = judgments[judgments["split"] == "validation"]
    keep = list(dict.fromkeys(validation["query"]))[:queries]
    return validation[validation["query"].isin(keep)].rename(columns={"product_title": "item_text"})


def test_onnx_matches_pytorch_on_real_pairs_of_any_batch_and_length(exported, judgments):
    student, tokenizer, path = exported
    pairs = _validation_pairs(judgments)
    queries, items = list(pairs["query"]), list(pairs["item_text"])
    for batch_size, lanes in ((1, 1), (7, 2), (64, 1), (64, 2)):  # dynamic batch and sequence axes; lanes side by side
        reference = score_pairs(student, tokenizer, queries, items, batch_size=batch_size)
        exported_scores = PairScorer.onnx(path, tokenizer, threads=2, max_batch_pairs=batch_size,
                                          lanes=lanes).score(queries, items)
        assert np.max(np.abs(reference - exported_scores)) <= FP32_MAX_ABS_DIFF


def test_lanes_share_the_threads_and_each_gets_the_same_mix_of_lengths(exported):
    _, tokenizer, path = exported
    assert [r.session.get_session_options().intra_op_num_threads for r in onnx_runners(path, threads=4, lanes=2)] == [2, 2]
    assert len(onnx_runners(path, threads=1, lanes=2)) == 1  # never more lanes than threads
    scorer = PairScorer.onnx(path, tokenizer, threads=2, lanes=2, max_batch_pairs=3)
    documents = ["drill", "cordless drill kit", "a much longer cordless drill kit title with a battery",
                 "hammer", "claw hammer 16 oz", "paint", "white interior paint 1 gal", "saw", "circular saw blade"]
    pairs = scorer.tokenize(["drill"] * len(documents), documents)
    batch = scorer.prepare([pairs])
    lanes = [np.concatenate([rows for rows, _ in lane]) for lane in batch.lanes]
    assert sorted(np.concatenate(lanes).tolist()) == list(range(len(documents)))  # every pair once
    assert [len(rows) for rows in lanes] == [5, 4]
    assert all(len(rows) <= 3 for lane in batch.lanes for rows, _ in lane)
    order = np.argsort(pairs.lengths, kind="stable")
    assert sorted(lanes[0].tolist()) == sorted(order[0::2].tolist())  # every other pair in length order
    one = scorer.prepare([scorer.tokenize(["drill"], ["drill"])])
    assert len(one.lanes) == 1 and scorer.run_prepared(one)[0].shape == (1,)


class _CountingRunner:
    """Scores a pair by its token count; `delay` seconds per sub-batch; records the sub-batches it ran."""

    def __init__(self, delay: float):
        self.delay, self.ran = delay, []

    def run(self, feeds):
        import time
        time.sleep(self.delay)
        self.ran.append(threading.get_ident())
        return feeds["attention_mask"].sum(axis=1).astype(np.float32)

    def is_ready(self):
        return True


def test_sub_batches_go_to_whichever_lane_is_free_and_calls_may_overlap(exported):
    _, tokenizer, _ = exported
    slow, fast = _CountingRunner(0.2), _CountingRunner(0.01)
    scorer = PairScorer(tokenizer, [slow, fast], max_batch_pairs=1)  # one pair per sub-batch
    documents = [f"cordless drill kit model {n}" for n in range(12)]
    pairs = scorer.tokenize(["drill"] * len(documents), documents)
    logits = scorer.run(pairs)
    np.testing.assert_array_equal(logits, pairs.lengths)  # every pair scored once, in its own place
    assert len(slow.ran) + len(fast.ran) == 12 and len(fast.ran) >= 9  # not dealt 6 and 6: the fast lane takes more
    assert len(set(slow.ran)) == len(set(fast.ran)) == 1 and set(slow.ran) != set(fast.ran)  # a thread per runner
    requests = [scorer.tokenize(["saw"] * n, documents[:n]) for n in (5, 7)]
    with concurrent.futures.ThreadPoolExecutor(2) as callers:  # two batches in the lanes at once
        results = list(callers.map(lambda request: scorer.run_prepared(scorer.prepare([request]))[0], requests))
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result, request.lengths)


def test_a_scorer_no_longer_used_is_freed_with_its_lane_threads(exported):
    import gc
    import weakref

    _, tokenizer, path = exported
    before = set(threading.enumerate())
    scorer = PairScorer.onnx(path, tokenizer, threads=2, lanes=2, max_batch_pairs=1)
    scorer.score(["drill"] * 4, ["cordless drill", "hammer", "saw", "paint"])  # both lanes started
    lanes = [thread for thread in threading.enumerate() if thread not in before]
    assert len(lanes) == 2
    freed = weakref.ref(scorer)
    del scorer
    gc.collect()
    for lane in lanes:
        lane.join(timeout=5)
    assert freed() is None and not any(lane.is_alive() for lane in lanes)


def test_extra_padding_changes_no_score(exported):
    student, tokenizer, path = exported
    feeds = tokenizer.encode(["drill", "cordless drill 18v"], ["drill", "a much longer cordless drill kit title"]).as_feeds()
    widened = {name: np.pad(value, ((0, 0), (0, 20))) for name, value in feeds.items()}  # zeros: padding
    session = onnx_session(path)
    with torch.no_grad():
        reference = student(**{name: torch.from_numpy(value) for name, value in feeds.items()}).logits.numpy()
    for batch in (feeds, widened):
        np.testing.assert_allclose(session.run(None, batch)[0], reference, atol=FP32_MAX_ABS_DIFF)
    empty = {name: np.zeros((2, 16), dtype=np.int64) for name in feeds}  # Triton's warm-up sample: no real token
    assert np.isfinite(session.run(None, empty)[0]).all()


def test_unpadded_scorer_does_exactly_the_work_the_compute_limit_counts(exported):
    from torch.utils.flop_counter import FlopCounterMode

    from rankstill.benchmarks.compute_limit import useful_flops
    from rankstill.export.onnx_export import UnpaddedBertScorer

    student, _, _ = exported
    generator = torch.Generator().manual_seed(0)
    for pairs, length in ((1, 5), (3, 17)):  # equal lengths: no padding, so attention has nothing to skip
        ids = torch.randint(1000, 2000, (pairs, length), generator=generator)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            UnpaddedBertScorer(student)(ids, torch.ones_like(ids), torch.zeros_like(ids))
        assert counter.get_total_flops() == useful_flops(np.full(pairs, length), SHAPE.hidden, SHAPE.intermediate,
                                                         SHAPE.layers)


def test_triton_config_names_the_graphs_inputs_and_output(exported, tmp_path):
    _, _, path = exported
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == [OUTPUT_NAME]
    text = config_pbtxt("some-model", max_batch_size=128)
    assert 'platform: "onnxruntime_onnx"' in text and "max_batch_size: 128" in text
    assert re.findall(r'name: "(\w+)" data_type: TYPE_INT64', text) == list(INPUT_NAMES)
    assert "dynamic_batching" in text and "max_queue_delay_microseconds" in text
    assert "model_warmup" in text and text.count("zero_data: true") == len(INPUT_NAMES)
    assert "KIND_CPU" in text and "tensorrt" not in text
    gpu = config_pbtxt("some-model", device="gpu")
    assert "KIND_GPU" in gpu and 'name: "tensorrt"' in gpu and "FP16" in gpu
    with pytest.raises(ValueError):
        config_pbtxt("some-model", device="tpu")


def test_repository_entry_round_trips_through_the_loader(exported, tmp_path):
    _, _, path = exported
    tokenizer_file = default_backbone() / "tokenizer.json"
    for name in ("b-model", "a-model"):
        write_entry(tmp_path, name, 3, path, {"task": "rerank", "max_length": 48}, config_pbtxt(name),
                    {"tokenizer.json": tokenizer_file})
    set_default(tmp_path, "rerank", "b-model")
    (tmp_path / "incomplete").mkdir()
    assert [entry.name for entry in list_models(tmp_path)] == ["a-model", "b-model"]
    assert default_model_name(tmp_path) == "b-model"
    entry = load_model(tmp_path)
    assert entry.version == 3 and entry.onnx_path.is_file() and entry.max_length == 48
    assert (tmp_path / "b-model" / "config.pbtxt").read_text().startswith('name: "b-model"')


def test_committed_models_stay_under_the_size_limit():
    for entry in list_models(MODEL_REPO):
        assert entry.onnx_path.stat().st_size <= 25 * 1024 * 1024, entry.name


def test_committed_int8_variant_ranks_like_fp32_within_stated_tolerance(judgments):
    fp32 = load_model(MODEL_REPO, FP32_MODEL)
    int8 = load_model(MODEL_REPO, INT8_MODEL)
    tokenizer = PairTokenizer.from_file(fp32.tokenizer_path, fp32.max_length)
    pairs = _validation_pairs(judgments, queries=300).rename(columns={"gain": "gain"})
    queries, items = list(pairs["query"]), list(pairs["item_text"])
    report = ranking_parity(pairs, PairScorer.onnx(fp32.onnx_path, tokenizer).score(queries, items),
                            PairScorer.onnx(int8.onnx_path, tokenizer).score(queries, items))
    assert report["passed"], report
    assert int8.onnx_path.stat().st_size < fp32.onnx_path.stat().st_size / 2


def test_int8_quantization_writes_a_runnable_model(exported, tmp_path):
    _, tokenizer, path = exported
    int8_path = quantize_int8(path, tmp_path / "int8.onnx")
    out = onnx_session(int8_path).run(None, tokenizer.encode(["drill"], ["cordless drill"]).as_feeds())[0]
    assert out.shape == (1, 1) and np.isfinite(out).all()


def test_teacher_export_gives_a_local_teacher_that_scores_like_pytorch(tmp_path, data_path):
    import asyncio

    from rankstill.distill.teacher import HFTeacher
    from rankstill.export.teacher_export import export_teacher
    from rankstill.server.local_teacher import LocalTeacher

    checkpoint = tmp_path / "checkpoint"  # the backbone with its (new, random) classification head, saved once
    HFTeacher(default_backbone(), max_length=32).save(checkpoint, "test-teacher", report={})
    metadata = export_teacher(checkpoint, data_path, tmp_path, "teacher", max_length=32, parity_pairs=32)
    assert metadata["role"] == "teacher" and metadata["teacher_id"] == "test-teacher"
    assert metadata["parity"]["fp32_vs_pytorch"]["passed"]
    documents = ["Cordless Drill Kit", "Bathroom Faucet", "Hammer Drill with a much longer product title " * 3]
    local = LocalTeacher(tmp_path / "teacher")
    served = asyncio.run(local.score("cordless drill", documents))
    reference = HFTeacher(checkpoint, max_length=32).score(["cordless drill"] * 3, documents)
    np.testing.assert_allclose(served, reference, atol=1e-4)



def test_peers_get_the_committed_students_own_weights_back_from_its_onnx_file(tmp_path):
    from transformers import BertForSequenceClassification

    from rankstill.benchmarks.student_checkpoint import recover

    entry = load_model(MODEL_REPO, FP32_MODEL)
    model = BertForSequenceClassification.from_pretrained(recover(entry, tmp_path / "checkpoint")).eval()
    tokenizer = PairTokenizer.from_file(entry.tokenizer_path, entry.max_length)
    queries, items = ["cordless drill"] * 3, ["DEWALT 20V cordless drill", "Delta kitchen faucet", "drill"]
    reference = score_pairs(model, tokenizer, queries, items)
    np.testing.assert_allclose(PairScorer.for_entry(entry).score(queries, items), reference, atol=FP32_MAX_ABS_DIFF)


def test_peers_checkpoint_follows_the_served_onnx_file(tmp_path):
    import shutil

    from onnx import numpy_helper
    from safetensors.numpy import load_file

    from rankstill.benchmarks.student_checkpoint import checkpoint_for

    served = load_model(MODEL_REPO, FP32_MODEL)
    checkpoint = tmp_path / "checkpoint"
    checkpoint_for(served, checkpoint)
    written = (checkpoint / "model.safetensors").stat().st_mtime_ns
    assert checkpoint_for(served, checkpoint) == checkpoint
    assert (checkpoint / "model.safetensors").stat().st_mtime_ns == written  # a copy of this very file is kept

    repo = tmp_path / "repo"  # the served student changes: its classifier bias moves by 1
    shutil.copytree(served.directory, repo / served.name)
    changed = load_model(repo, served.name)
    graph = onnx.load(str(changed.onnx_path))
    bias = next(i for i in graph.graph.initializer if i.name == "classifier.bias")
    old_bias = numpy_helper.to_array(bias).copy()
    bias.CopyFrom(numpy_helper.from_array(old_bias + 1, bias.name))
    onnx.save(graph, str(changed.onnx_path))
    checkpoint_for(changed, checkpoint)
    np.testing.assert_allclose(load_file(checkpoint / "model.safetensors")["classifier.bias"], old_bias + 1)

    foreign = tmp_path / "foreign"  # a folder rankstill did not write is never overwritten
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="not recovered from"):
        checkpoint_for(served, foreign)
    assert (foreign / "config.json").read_text() == "{}"
