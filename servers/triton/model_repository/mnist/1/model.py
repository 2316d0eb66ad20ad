"""Triton Python backend model: ONNX Runtime on the CPU, one thread, one call per dynamic batch."""
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        model = Path(__file__).with_name("model.onnx")  # copied beside this file
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        # The dynamic batcher hands over several requests: run them as one batch, then split the answer.
        images = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        logits = self.session.run(["logits"], {"images": np.concatenate(images)})[0]
        parts = np.split(logits, np.cumsum([len(x) for x in images])[:-1])
        return [pb_utils.InferenceResponse([pb_utils.Tensor("logits", part)]) for part in parts]
