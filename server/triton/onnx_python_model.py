"""Triton python-backend model that runs a repository's `model.onnx` with ONNX Runtime.

The Triton build inside the `nvidia-pytriton` wheel has only the python backend; this file
stands in for the native `onnxruntime` backend with the same inputs, outputs and batching.
It runs inside Triton's python stub (its own interpreter with numpy<2), so it imports only
numpy, onnxruntime and Triton's utilities. It loads `<version>/model.onnx` beside itself;
config.pbtxt may set the parameter `intra_op_threads`.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        threads = int(parameters.get("intra_op_threads", "0"))
        if threads:
            options.intra_op_num_threads = threads
        onnx_path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(onnx_path, options,
                                            providers=["CPUExecutionProvider"])
        self.output_name = self.session.get_outputs()[0].name

    def execute(self, requests):
        # Triton's dynamic batcher hands over several requests of the same shape: run them as one.
        feeds = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in INPUT_NAMES}
                 for r in requests]
        sizes = [f["input_ids"].shape[0] for f in feeds]
        if len({f["input_ids"].shape[1] for f in feeds}) == 1:
            merged = {name: np.concatenate([f[name] for f in feeds]) for name in INPUT_NAMES}
            scores = np.split(self.session.run([self.output_name], merged)[0], np.cumsum(sizes)[:-1])
        else:
            scores = [self.session.run([self.output_name], f)[0] for f in feeds]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, s.astype(np.float32))])
                for s in scores]
