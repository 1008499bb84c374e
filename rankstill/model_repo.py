"""The one reader of `model_repo/`, a Triton model repository with rankstill metadata.

Layout (written by `rankstill export`)::

    model_repo/
      defaults.json                 {"rerank": "<model name>"}
      <name>/config.pbtxt           Triton configuration
      <name>/rankstill.json         max length, score meaning, training data, quality report
      <name>/tokenizer.json         the tokenizer the model was trained with
      <name>/<version>/model.onnx
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

METADATA_FILE = "rankstill.json"
TOKENIZER_FILE = "tokenizer.json"
DEFAULTS_FILE = "defaults.json"
ITEMS_FILE = "items.json"  # recommenders: item index -> {id, title}
MODEL_FILE = "model.onnx"


class ModelRepoError(LookupError):
    """The repository or a model in it is missing or incomplete."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    directory: Path
    version: int
    metadata: dict

    @property
    def onnx_path(self) -> Path:
        return self.directory / str(self.version) / MODEL_FILE

    @property
    def tokenizer_path(self) -> Path:
        return self.directory / TOKENIZER_FILE

    @property
    def items_path(self) -> Path:
        return self.directory / ITEMS_FILE

    @property
    def max_length(self) -> int:
        return int(self.metadata["max_length"])

    @property
    def task(self) -> str:
        return self.metadata.get("task", "rerank")

    def versions(self) -> list[int]:
        """Every version of this model that has a model file, newest first."""
        return _versions(self.directory)


def _versions(model_dir: Path) -> list[int]:
    return sorted((int(child.name) for child in model_dir.iterdir()
                   if child.is_dir() and child.name.isdigit() and (child / MODEL_FILE).is_file()), reverse=True)


def _latest_version(model_dir: Path) -> int | None:
    found = _versions(model_dir)
    return found[0] if found else None


def _complete_entry(model_dir: Path) -> ModelEntry | None:
    """The entry in `model_dir` if it has metadata and at least one ONNX version, else None."""
    metadata_path = model_dir / METADATA_FILE
    version = _latest_version(model_dir) if model_dir.is_dir() else None
    if not metadata_path.is_file() or version is None:
        return None
    return ModelEntry(model_dir.name, model_dir, version, json.loads(metadata_path.read_text()))


def read_entry(model_dir: str | Path) -> ModelEntry:
    """One model directory (`<name>/rankstill.json`, `<name>/<version>/model.onnx`) on its own."""
    entry = _complete_entry(Path(model_dir))
    if entry is None:
        raise ModelRepoError(f"{model_dir} is not a model entry ({METADATA_FILE} and <version>/{MODEL_FILE}); "
                             "`rankstill export` or `rankstill teacher export` writes one")
    return entry


def list_models(repo: str | Path) -> list[ModelEntry]:
    """Every complete model entry (metadata + at least one ONNX version), sorted by name."""
    repo = Path(repo)
    if not repo.is_dir():
        raise ModelRepoError(f"model repository {repo} does not exist")
    entries = (_complete_entry(model_dir) for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()))
    return [entry for entry in entries if entry is not None]


def default_model_name(repo: str | Path, task: str = "rerank") -> str:
    defaults_path = Path(repo) / DEFAULTS_FILE
    if defaults_path.is_file():
        name = json.loads(defaults_path.read_text()).get(task)
        if name:
            return name
    candidates = [entry.name for entry in list_models(repo) if entry.task == task]
    if not candidates:
        raise ModelRepoError(f"no {task} model in {repo}")
    return candidates[0]


def load_model(repo: str | Path, name: str | None = None, task: str = "rerank") -> ModelEntry:
    name = name or default_model_name(repo, task)
    for entry in list_models(repo):
        if entry.name == name:
            return entry
    raise ModelRepoError(f"model {name!r} not found in {repo}")
