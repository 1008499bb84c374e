import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from rankstill.distill.student import StudentShape, build_student
from rankstill.distill.teacher import default_backbone
from rankstill.distill.train_student import distillation_loss, query_lists, sample_items
from rankstill.pair_tokenizer import PairTokenizer

SHAPE = StudentShape(layers=2, hidden=64, heads=2, intermediate=128, max_length=32)


def _neighbours(matrix: torch.Tensor, row: int, k: int = 10) -> set[int]:
    normed = torch.nn.functional.normalize(matrix, dim=1)
    similarity = normed @ normed[row]
    return set(similarity.topk(k + 1).indices.tolist()) - {row}


def test_pca_embeddings_keep_word_neighbourhoods():
    backbone = default_backbone()
    torch.manual_seed(0)
    student = build_student(SHAPE, backbone)
    original = next(t for n, t in load_file(str(backbone / "model.safetensors")).items()
                    if n.endswith("word_embeddings.weight")).float()
    projected = student.bert.embeddings.word_embeddings.weight.detach()
    assert projected.shape == (original.shape[0], SHAPE.hidden)
    vocab = PairTokenizer.from_file(backbone / "tokenizer.json", 16)._tokenizer
    rows = [vocab.token_to_id(w) for w in ["door", "paint", "water", "light", "wood", "kitchen"]]
    assert None not in rows
    overlaps = [len(_neighbours(original, row) & _neighbours(projected, row)) for row in rows]
    # A random 64-d projection of a 30k vocabulary would share ~0 of 10 neighbours.
    assert np.mean(overlaps) >= 3, overlaps


def test_distillation_fits_teacher_margins_on_a_fixed_batch():
    backbone = default_backbone()
    torch.manual_seed(0)
    student = build_student(SHAPE, backbone)
    tokenizer = PairTokenizer.from_file(backbone / "tokenizer.json", SHAPE.max_length)
    lists = [
        ("cordless drill", ["dewalt cordless drill kit", "drill bit set", "bath faucet"],
         np.array([3.0, 0.5, -2.0], np.float32)),
        ("white paint", ["behr white interior paint", "paint roller", "copper pipe", "white door"],
         np.array([2.5, 0.0, -3.0, -1.0], np.float32)),
    ]
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        loss = distillation_loss(student, tokenizer, lists, bce_weight=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


def test_queries_with_many_candidates_show_each_of_them_in_turn():
    labels = pd.DataFrame({
        "query": ["deep"] * 40 + ["short"] * 3,
        "item_id": [f"d{i}" for i in range(40)] + ["s0", "s1", "s2"],
        "item_text": [f"text {i}" for i in range(40)] + ["a", "b", "c"],
        "teacher_score": np.arange(43, dtype=np.float32),
        "human_label": [0.5] * 5 + [np.nan] * 38,
    })
    deep, short = query_lists(labels)
    generator = np.random.default_rng(0)
    assert sample_items(short, 8, generator) is short
    seen = set()
    for _ in range(60):
        query, items, teacher, human = sample_items(deep, 8, generator)
        assert query == "deep" and len(items) == len(set(items)) == 8
        positions = [int(item.split()[1]) for item in items]
        assert teacher.tolist() == positions  # scores and labels stay with their items
        assert np.isnan(human).tolist() == [p >= 5 for p in positions]
        seen.update(items)
    assert len(seen) == 40
