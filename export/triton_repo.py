"""Write a model as a Triton model repository entry (`model_repo/<name>/<version>/model.onnx`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rankstill.model_repo import DEFAULTS_FILE, METADATA_FILE, MODEL_FILE

from .onnx_export import INPUT_NAMES, OUTPUT_NAME


def config_pbtxt(name: str, max_batch_size: int = 256, preferred_batch_sizes=(64, 128, 256),
                 max_queue_delay_us: int = 1000, instances: int = 1, device: str = "cpu",
                 warmup_length: int = 16) -> str:
    """Triton config for the native ONNX Runtime backend, with dynamic batching and a warm-up.

    The batch dimension is implicit (max_batch_size > 0); the sequence axis is dynamic.
    `device="gpu"` places instances on the GPU and asks ONNX Runtime for its TensorRT
    execution provider (fp16).
    """
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be cpu or gpu, not {device!r}")
    inputs = ",\n".join(
        f'  {{ name: "{input_name}" data_type: TYPE_INT64 dims: [ -1 ] }}' for input_name in INPUT_NAMES
    )
    warmup_inputs = "\n".join(
        f'    inputs {{ key: "{input_name}" value: {{ data_type: TYPE_INT64 dims: [ {warmup_length} ] zero_data: true }} }}'
        for input_name in INPUT_NAMES
    )
    preferred = ", ".join(str(size) for size in preferred_batch_sizes)
    kind = "KIND_GPU" if device == "gpu" else "KIND_CPU"
    config = f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
{inputs}
]
output [
  {{ name: "{OUTPUT_NAME}" data_type: TYPE_FP32 dims: [ 1 ] }}
]
dynamic_batching {{
  preferred_batch_size: [ {preferred} ]
  max_queue_delay_microseconds: {max_queue_delay_us}
}}
instance_group [ {{ count: {instances} kind: {kind} }} ]
version_policy: {{ latest: {{ num_versions: 1 }} }}
model_warmup [
  {{
    name: "zeros"
    batch_size: 1
{warmup_inputs}
  }}
]
"""
    if device == "gpu":
        config += """optimization { execution_accelerators {
  gpu_execution_accelerator: [ { name: "tensorrt" parameters { key: "precision_mode" value: "FP16" } } ]
} }
"""
    return config


def recommend_config_pbtxt(name: str, window: int, num_items: int, max_batch_size: int = 64,
                           inputs: tuple[str, ...] = ("history", "lengths")) -> str:
    """Triton config for a sequential recommender: history ids (and lengths, where the graph reads
    them: Caser's does not) in, scores over all items out. `inputs` must be exactly the ONNX graph's
    inputs, or Triton's ONNX Runtime backend refuses the model."""
    declared = {
        "history": f'{{ name: "history" data_type: TYPE_INT64 dims: [ {window} ] }}',
        "lengths": '{ name: "lengths" data_type: TYPE_INT64 dims: [ 1 ] reshape: { shape: [ ] } }',
    }
    unknown = set(inputs) - set(declared)
    if unknown or "history" not in inputs:
        raise ValueError(f"a recommender reads history (and lengths), not {sorted(inputs)}")
    listed = ",\n".join(f"  {declared[name]}" for name in declared if name in inputs)
    return f"""name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [
{listed}
]
output [
  {{ name: "scores" data_type: TYPE_FP32 dims: [ {num_items} ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
version_policy: {{ latest: {{ num_versions: 1 }} }}
"""


def write_entry(repo: Path, name: str, version: int, onnx_file: Path, metadata: dict, config: str,
                extra_files: dict[str, Path]) -> Path:
    """Copy the model, its side files (tokenizer, item titles), metadata and Triton config into `repo/name/`."""
    model_dir = repo / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, version_dir / MODEL_FILE)
    for file_name, source in extra_files.items():
        shutil.copyfile(source, model_dir / file_name)
    (model_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir


def set_default(repo: Path, task: str, name: str) -> None:
    path = repo / DEFAULTS_FILE
    defaults = json.loads(path.read_text()) if path.is_file() else {}
    defaults[task] = name
    path.write_text(json.dumps(defaults, indent=2) + "\n")
