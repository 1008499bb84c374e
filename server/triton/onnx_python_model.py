"""Triton python-backend model that runs a repository's `model.onnx` with ONNX Runtime.

The Triton build inside the `nvidia-pytriton` wheel has only the python backend; this file
stands in for the native `onnxruntime` backend with the same inputs, outputs and batching.
It runs inside Triton's python stub (its own interpreter with numpy<2), so it imports only
numpy, onnxruntime and Triton's utilities. It loads `<version>/model.onnx` beside itself;
config.pbtxt may set the parameter `intra_op_threads`. Inputs and the output are the ones
config.pbtxt names (rerankers: token ids; recommenders: `history` and, where the graph reads it,
`lengths`, whose `dims: [1]` the model gets reshaped to one value per row).
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


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
        self.input_names = [i["name"] for i in config["input"]]
        self.ranks = {i.name: len(i.shape) for i in self.session.get_inputs()}
        self.output_name = config["output"][0]["name"]

    def _feed(self, request):
        feed = {}
        for name in self.input_names:
            value = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            if value.ndim == self.ranks[name] + 1 and value.shape[-1] == 1:  # dims [1] → one value per row
                value = value[..., 0]
            feed[name] = value
        return feed

    def execute(self, requests):
        # Triton's dynamic batcher hands over several requests of the same shape: run them as one.
        feeds = [self._feed(r) for r in requests]
        sizes = [f[self.input_names[0]].shape[0] for f in feeds]
        if len({tuple(f[name].shape[1:] for name in self.input_names) for f in feeds}) == 1:
            merged = {name: np.concatenate([f[name] for f in feeds]) for name in self.input_names}
            scores = np.split(self.session.run([self.output_name], merged)[0], np.cumsum(sizes)[:-1])
        else:
            scores = [self.session.run([self.output_name], f)[0] for f in feeds]
        return [pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, s.astype(np.float32))])
                for s in scores]
