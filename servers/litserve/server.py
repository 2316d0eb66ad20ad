"""Chapter 04's ONNX export served with LitServe: python servers/litserve/server.py MODEL_ONNX PORT [--workers N]

POST /predict {"images": [[[[...28 x 28...]]]]} (N, 1, 28, 28) -> {"logits": [[...10...], ...]}; GET /health.
"""

import argparse

import litserve as ls
import numpy as np
import onnxruntime as ort
from fastapi import HTTPException


class MnistAPI(ls.LitAPI):
    def __init__(self, model_path, **options):
        super().__init__(**options)
        self.model_path = model_path

    def setup(self, device):  # once per worker process
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1  # parallelism comes from requests
        self.session = ort.InferenceSession(self.model_path, options, providers=["CPUExecutionProvider"])

    def decode_request(self, request):
        try:
            x = np.asarray(request["images"], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as error:
            raise HTTPException(400, f"expected {{'images': (N, 1, 28, 28) numbers}}: {error!r}") from None
        if x.ndim != 4 or x.shape[1:] != (1, 28, 28) or not 1 <= len(x) <= 256:
            raise HTTPException(400, f"'images' must have shape (N, 1, 28, 28), 1 <= N <= 256; got {x.shape}")
        return x

    def batch(self, inputs):  # when batching: the images of several requests, in one array
        self.sizes = [len(x) for x in inputs]
        return np.concatenate(inputs)

    def predict(self, x):
        return self.session.run(None, {"images": x})[0]

    def unbatch(self, output):  # back to one array per request
        return np.split(output, np.cumsum(self.sizes)[:-1])

    def encode_response(self, logits):
        return {"logits": logits.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model_onnx")
    parser.add_argument("port", type=int)
    parser.add_argument("--workers", type=int, default=1, help="inference processes (LitServe's workers_per_device)")
    parser.add_argument("--max-batch-size", type=int, default=32, help="1: no batching")
    args = parser.parse_args()
    api = MnistAPI(args.model_onnx, max_batch_size=args.max_batch_size, batch_timeout=0.002)  # up to 32 rows, 2 ms
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)
