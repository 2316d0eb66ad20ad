"""The ONNX model served by PyTriton: a Python function bound to a Triton Inference Server that PyTriton starts.

    python server.py model.onnx HTTP_PORT GRPC_PORT METRICS_PORT [--workspace DIR] [--no-batching]
"""
import argparse
import os

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

INSTANCES = 2  # two copies of the model, one per CPU core (Triton's instance_group count)
# Tensors travel between Triton's stubs and this process base64-encoded over ZeroMQ rather than through PyTriton's
# shared-memory tensor store: its start-up (a process spawned by the first instance) can outlast the 1 s the second
# instance waits for it on a busy 2-core machine, and then the model fails to load.
os.environ.setdefault("PYTRITON_NO_TENSORSTORE", "1")


def make_infer(model_path):
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

    @batch  # Triton's dynamic batch arrives as one array per input, the requests stacked along the first axis
    def infer(images: np.ndarray):
        return {"logits": session.run(["logits"], {"images": images})[0]}

    return infer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("ports", type=int, nargs=3, metavar="PORT", help="HTTP, gRPC and metrics ports")
    parser.add_argument("--workspace", help="where PyTriton copies Triton and writes the model store")
    parser.add_argument("--no-batching", action="store_true")
    args = parser.parse_args()
    http, grpc, metrics = args.ports
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                          metrics_address="127.0.0.1", metrics_port=metrics, log_verbose=0, exit_timeout_secs=5)
    batcher = None if args.no_batching else DynamicBatcher(max_queue_delay_microseconds=2000)
    # PyTriton keeps Triton's statistics, model-repository, shared-memory, trace and logging APIs behind a token
    # (header triton-access-token); None: a random one nobody else knows.
    security = TritonSecurityConfig(access_token=os.environ.get("PYTRITON_ACCESS_TOKEN"))
    with Triton(config=config, workspace=args.workspace, security_config=security) as triton:
        triton.bind(
            model_name="mnist",
            infer_func=[make_infer(args.model) for _ in range(INSTANCES)],  # one function per model instance
            inputs=[Tensor(name="images", dtype=np.float32, shape=(1, 28, 28))],
            outputs=[Tensor(name="logits", dtype=np.float32, shape=(10,))],
            config=ModelConfig(max_batch_size=32, batcher=batcher),
            strict=True,
        )
        triton.serve()  # blocks until SIGINT/SIGTERM


if __name__ == "__main__":
    main()
