import numpy as np
import torch
from safetensors.torch import load_file

from rankstill.distill.student import StudentShape, build_student
from rankstill.distill.teacher import default_backbone
from rankstill.distill.train_student import distillation_loss
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
