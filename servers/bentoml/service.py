"""A BentoML service: chapter 04's ONNX export in ONNX Runtime, on the CPU, behind one batchable endpoint.

    bentoml serve service:MnistOnnx --host 127.0.0.1 --port 3000
    curl -s -X POST http://127.0.0.1:3000/predict -H 'Content-Type: application/json' -d '{"images": [[[[0.0, ...]]]]}'

POST /predict takes {"images": a float32 array (N, 1, 28, 28)} and answers the logits (N, 10) as a JSON list of lists.
With `batchable=True` BentoML's adaptive batching concatenates concurrent requests along axis 0, calls `predict` once
and splits the answer. `max_latency_ms` is not a batching window: it is the latency the dispatcher promises, and
requests it estimates it cannot serve within it are refused with 503 (so it is set well above a batch's time).
`MNIST_BATCHING=false` in the environment makes the endpoint non-batchable (one call per request).
"""

import os
from pathlib import Path
from typing import Annotated

import bentoml
import numpy as np
from bentoml.validators import DType, Shape

BATCHING = os.environ.get("MNIST_BATCHING", "true").lower() == "true"
MODEL = Path(os.environ.get("MNIST_ONNX", Path(__file__).with_name("model.onnx")))


@bentoml.service(workers=1, traffic={"timeout": 30})
class MnistOnnx:
    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()  # the course's setting: 1 thread inside an operator, 1 across operators
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(MODEL), options, providers=["CPUExecutionProvider"])

    @bentoml.api(batchable=BATCHING, batch_dim=0, max_batch_size=32, max_latency_ms=1000)
    def predict(self, images: Annotated[np.ndarray, Shape((-1, 1, 28, 28)), DType("float32")]) -> np.ndarray:
        return self.session.run(["logits"], {"images": np.ascontiguousarray(images, np.float32)})[0]
