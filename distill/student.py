"""The student: a small BERT cross-encoder that starts from the teacher backbone's vocabulary.

Its word, position and token-type embeddings are the backbone's, projected to the student's
width by PCA (the principal directions of the word embeddings), which is a far better start
than random vectors for a model that must learn 30k tokens from a few hundred thousand pairs.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from rankstill.scoring import PairScorer

from .torch_runner import TorchRunner

STUDENT_CARD = "rankstill_student.json"


@dataclass(frozen=True)
class StudentShape:
    layers: int = 2
    hidden: int = 128
    heads: int = 2
    intermediate: int = 512
    max_length: int = 64
    dropout: float = 0.1
    identity_attention: bool = False
    init_layers: str = ""  # e.g. "0,2,4": start from these layers of the backbone (width = backbone's)


def build_student(shape: StudentShape, backbone_dir: Path) -> BertForSequenceClassification:
    backbone_config = json.loads((backbone_dir / "config.json").read_text())
    config = BertConfig(
        vocab_size=backbone_config["vocab_size"], hidden_size=shape.hidden,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        max_position_embeddings=max(shape.max_length, 64),
        type_vocab_size=backbone_config.get("type_vocab_size", 2), num_labels=1,
        hidden_dropout_prob=shape.dropout, attention_probs_dropout_prob=shape.dropout,
    )
    student = BertForSequenceClassification(config)
    if shape.init_layers:
        _copy_backbone_layers(student, backbone_dir, [int(i) for i in shape.init_layers.split(",")])
        return student
    _project_embeddings(student, backbone_dir, shape.hidden)
    if shape.identity_attention:
        _identity_query_key(student)
    return student


def _identity_query_key(student: BertForSequenceClassification) -> None:
    """Start query and key projections at the identity, so attention begins as token similarity.

    A document token then attends most to identical or similar tokens (in the query too):
    a lexical-match prior that a small cross-encoder otherwise has to discover.
    """
    with torch.no_grad():
        for layer in student.bert.encoder.layer:
            for projection in (layer.attention.self.query, layer.attention.self.key):
                projection.weight.copy_(torch.eye(projection.weight.shape[0]))
                projection.bias.zero_()


def _copy_backbone_layers(student: BertForSequenceClassification, backbone_dir: Path, layers: list[int]) -> None:
    """Start from the backbone itself: its embeddings, the chosen encoder layers (student layer n = backbone
    layer layers[n]), pooler and classifier where present. The student's width must be the backbone's;
    a fine-tuned teacher checkpoint as backbone gives a student initialised from the teacher's own layers."""
    if len(layers) != student.config.num_hidden_layers:
        raise ValueError(f"init_layers names {len(layers)} layers for a {student.config.num_hidden_layers}-layer student")
    weights = {name.removeprefix("bert."): tensor for name, tensor in load_file(str(backbone_dir / "model.safetensors")).items()}
    state = student.state_dict()
    copied = {}
    for name in state:
        source = name.removeprefix("bert.")
        if source.startswith("encoder.layer."):
            index, rest = source.removeprefix("encoder.layer.").split(".", 1)
            source = f"encoder.layer.{layers[int(index)]}.{rest}"
        if source in weights and weights[source].shape == state[name].shape:
            copied[name] = weights[source].float()
        elif source in weights and name.startswith("bert.embeddings.position") and weights[source].shape[1] == state[name].shape[1]:
            copied[name] = weights[source][: state[name].shape[0]].float()
        elif source in weights:
            raise ValueError(f"{name}: backbone has shape {tuple(weights[source].shape)}, student {tuple(state[name].shape)} "
                             "(init_layers needs the backbone's width, heads and intermediate size)")
    student.load_state_dict(copied, strict=False)


def _project_embeddings(student: BertForSequenceClassification, backbone_dir: Path, width: int) -> None:
    weights = load_file(str(backbone_dir / "model.safetensors"))

    def find(suffix: str) -> torch.Tensor:
        return next(tensor for name, tensor in weights.items() if name.endswith(suffix))

    words = find("embeddings.word_embeddings.weight").float()
    mean = words.mean(dim=0, keepdim=True)
    # Principal directions of the word embeddings (rows of vh), scaled to keep the variance.
    _, _, vh = torch.linalg.svd(words - mean, full_matrices=False)
    projection = vh[:width].T
    scale = words.std() / ((words - mean) @ projection).std()
    embeddings = student.bert.embeddings
    with torch.no_grad():
        embeddings.word_embeddings.weight.copy_(((words - mean) @ projection) * scale)
        positions = find("embeddings.position_embeddings.weight").float()
        rows = embeddings.position_embeddings.weight.shape[0]
        embeddings.position_embeddings.weight.copy_((positions[:rows] @ projection) * scale)
        types = find("embeddings.token_type_embeddings.weight").float()
        embeddings.token_type_embeddings.weight.copy_((types @ projection) * scale)


def save_student(student: BertForSequenceClassification, out: Path, tokenizer_file: Path,
                 shape: StudentShape, card: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(out)
    shutil.copyfile(tokenizer_file, out / "tokenizer.json")
    (out / STUDENT_CARD).write_text(json.dumps({"shape": asdict(shape), **card}, indent=2))


def load_student(directory: Path) -> tuple[BertForSequenceClassification, dict]:
    card_path = directory / STUDENT_CARD
    if not card_path.is_file():
        raise FileNotFoundError(f"{directory} is not a rankstill student (no {STUDENT_CARD})")
    student = BertForSequenceClassification.from_pretrained(directory)
    student.eval()
    return student, json.loads(card_path.read_text())


def score_pairs(student: BertForSequenceClassification, tokenizer, queries: list[str],
                items: list[str], batch_size: int = 256) -> np.ndarray:
    """Student logits for (query, item) pairs, tokenized, batched and padded exactly as the server does."""
    was_training = student.training
    student.eval()
    logits = PairScorer(tokenizer, TorchRunner(student), batch_size).score(queries, items)
    student.train(was_training)
    return logits
