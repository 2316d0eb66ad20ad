"""The browser demo's model repository, and `python -m helpers.demo` (`make demo`): one command for the whole demo.

The repository holds chapter 04's float32 ONNX export of the PyTorch `source_cnn` as model `mnist`, and chapter 05's
int8 (static, QDQ) quantization of it as `mnist_int8`; both are rebuilt the way those chapters make them when they
are missing. The server then serves them over KServe v2 and, with `--demo`, the page and the model files under /demo/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from helpers import data, export, model_store, paths, quantize, training
from helpers.fixes import with_fix
from helpers.processes import port_free
from helpers.serving.process import DEMO_PORT
from helpers.serving.repository import publish

CALIBRATION_IMAGES = 500  # as in chapter 05


def repository_root() -> Path:
    return paths.artifacts() / "demo-repository"


def build_repository(smoke: bool = False, seed: int = 0, root: Path | None = None) -> dict[str, Path]:
    """Publish `mnist` (float32) and `mnist_int8` into the demo repository; returns {model name: its export folder}."""
    root = root or repository_root()
    model, card = model_store.ensure_model("torch", "source_cnn", smoke=smoke)
    fp32 = export.current_export("onnx", "source_cnn", 1, card, lambda: export.export_torch_onnx(model, "source_cnn", 1, card))

    def quantize_fp32():
        calibration = quantize.calibration_images(data.load_mnist().x_train, CALIBRATION_IMAGES, seed=seed)
        return quantize.quantize_onnx(fp32, "source_cnn", "static", training.images_for("torch", calibration), "minmax")

    # the int8 file carries the float export's source card, so the same freshness check applies
    int8 = export.current_export("onnx", quantize.variant_name("source_cnn", "int8_minmax"), 1, card, quantize_fp32)
    exports = {"mnist": fp32, "mnist_int8": int8}
    for name, directory in exports.items():
        publish(directory, root, name, 1)
    return exports


def main(argv=None) -> int:
    from helpers.serving.process import running_server

    parser = argparse.ArgumentParser(prog="python -m helpers.demo", description="Start the course's server with the browser demo.")
    parser.add_argument("--smoke", action="store_true", help="use (or train) the quick smoke-mode model")
    parser.add_argument("--port", type=int, default=DEMO_PORT, help=f"port on 127.0.0.1 (default {DEMO_PORT}: one address for a whole class)")
    args = parser.parse_args(argv)
    if not port_free(args.port):
        print(with_fix(f"port {args.port} on 127.0.0.1 is in use", "port", args.port), file=sys.stderr)
        return 2
    exports = build_repository(smoke=args.smoke)
    with running_server(repository_root(), demo=True, name="demo", port=args.port) as server:
        print(f"Serving {', '.join(exports)} from {repository_root()}")
        print(f"Open {server.url}/demo/ in a browser (Ctrl-C stops the server).", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
