from __future__ import annotations

from pathlib import Path

import pytest

from rankstill.local_server import running_server as _running_server

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "homedepot" / "pairs.csv.gz"
MODEL_REPO = ROOT / "model_repo"
# The repository serves the int8 student by default (it passed the export's ranking gate); tests that
# compare scores to 1e-4 name the fp32 student, whose scores do not depend on what they are batched with.
FP32_MODEL = "rerank-student"
INT8_MODEL = f"{FP32_MODEL}-int8"


@pytest.fixture(scope="session")
def data_path() -> Path:
    assert DATA.is_file(), f"tests need the shared data at {DATA} (see shared/DATA.md)"
    return DATA


@pytest.fixture(scope="session")
def judgments(data_path):
    from rankstill.distill.data import load_judgments

    return load_judgments(data_path)


def running_server(*args: str, wait_for: str = "/readyz"):
    return _running_server(*args, cwd=ROOT, wait_for=wait_for)


# Dynamic int8 quantization scales activations by the range of the whole batch, padding
# included, so an int8 score depends slightly on what it was batched with.
INT8_BATCH_TOLERANCE = 5e-3  # measured: up to 2e-3 on the committed int8 student

MOVIELENS = ROOT.parent / "shared" / "data" / "movielens100k"


@pytest.fixture(scope="session")
def seq_data(tmp_path_factory):
    """MovieLens-100K written once by `write_dataset` (the same code `rankstill seq data` runs)."""
    from rankstill.distill.seqrec.data import SeqData, write_dataset

    assert MOVIELENS.is_dir(), f"tests need MovieLens-100K at {MOVIELENS} (see shared/DATA.md)"
    folder = tmp_path_factory.mktemp("seq-data")
    write_dataset(MOVIELENS, folder)
    return SeqData.open(folder)
