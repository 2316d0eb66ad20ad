"""The browser demo's model repository, and `python -m helpers.demo` (`make demo`): one command for the whole demo.

The repository holds chapter 04's float32 ONNX export of the PyTorch `source_cnn` as model `mnist`, and chapter 05's
int8 (static, QDQ) quantization of it as `mnist_int8`; both are rebuilt the way those chapters make them when they
are missing. The server then serves them over KServe v2 and, with `--demo`, the page and the model files under /demo/.

On 127.0.0.1 (the default) the page needs no key. `--host 0.0.0.0` (`make demo HOST=0.0.0.0`) serves the room: the
server accepts no other address without an API key, so the demo takes $COURSE_SERVING_API_KEY or generates one, and
prints one address per network interface with the key in it (`/demo/?key=...`, which the page sends with each of its
requests). The key goes to the server in its environment: it is in no log and on no command line.

The demo stops its server however it is stopped: Ctrl-C, SIGTERM (make passes it on), SIGHUP (the terminal closed)
and its parent's exit (a `make demo` killed outright) all end in the same `finally` that stops the server.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from urllib.parse import quote

from helpers import data, export, model_store, paths, quantize, training
from helpers.fixes import with_fix
from helpers.processes import http_url, port_free, signal_when_parent_dies
from helpers.serving.__main__ import API_KEY_ENV, is_loopback
from helpers.serving.process import DEMO_PORT
from helpers.serving.repository import publish

CALIBRATION_IMAGES = 500  # as in chapter 05
KEY_BYTES = 32  # a generated key: 32 random bytes (256 bits), 43 URL-safe characters
EVERY_ADDRESS = ("0.0.0.0", "::", "")


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


def room_key(host: str) -> str | None:
    """The API key for a server bound to `host`: $COURSE_SERVING_API_KEY if set, else a new random one off loopback,
    else none (127.0.0.1 needs no key)."""
    given = os.environ.get(API_KEY_ENV, "").strip()
    if given or is_loopback(host):
        return given or None
    return secrets.token_urlsafe(KEY_BYTES)


def machine_addresses() -> dict[str, int]:
    """This machine's addresses now, every interface's (loopback and IPv6 too): {address: socket family}."""
    import psutil

    return {a.address.split("%")[0]: a.family for addresses in psutil.net_if_addrs().values() for a in addresses
            if a.family in (socket.AF_INET, socket.AF_INET6)}


def room_addresses(host: str) -> list[str]:
    """Where other machines reach a server bound to `host`: when it is bound to every address, this machine's IPv4
    addresses but loopback, one per network interface; else `host` itself."""
    if host not in EVERY_ADDRESS:
        return [host]
    return [a for a, family in machine_addresses().items() if family == socket.AF_INET and not is_loopback(a)]


def page_url(base: str, key: str | None) -> str:
    """The page's address on the server at `base` (http://host:port), with the key the page then sends."""
    return f"{base}/demo/" + (f"?key={quote(key, safe='')}" if key else "")


class Stopped(Exception):
    """Raised in the main thread by a stopping signal, so that every `with` and `finally` on the way out runs."""


def stop_on_signals() -> None:
    """SIGTERM, SIGINT and SIGHUP raise Stopped; the first one also ignores any further ones, so that a second signal
    cannot interrupt the stopping itself (the server gets its own SIGTERM, then SIGKILL after a grace period). A
    SIGHUP ignored from the start (`nohup`) stays ignored, and then the demo also outlives its parent; otherwise the
    parent's exit (make killed with SIGKILL, which it cannot pass on) sends this process a SIGTERM."""
    stopping = [signal.SIGTERM, signal.SIGINT]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stopping.append(signal.SIGHUP)

    def stop(signum, frame):
        for sig in stopping:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signal.Signals(signum).name)

    for sig in stopping:
        signal.signal(sig, stop)
    if signal.SIGHUP in stopping:
        signal_when_parent_dies(signal.SIGTERM)


def announce(server, host: str, port: int, key: str | None, exports) -> None:
    print(f"Serving {', '.join(exports)} from {repository_root()}")
    if is_loopback(host):
        print(f"Open {page_url(server.url, key)} in a browser (Ctrl-C stops the server).", flush=True)
        return
    addresses = room_addresses(host)
    print(f"Open {'this address' if len(addresses) < 2 else 'one of these addresses'} on a phone or laptop on the same "
          "network as this machine (Ctrl-C stops the server):")
    for address in addresses:
        print(f"  {page_url(http_url(address, port), key)}")
    if not addresses:
        print("  (none: this machine has no network address but loopback; connect it to the room's network)")
    print(f"  or, on this machine, {page_url(server.url, key)}")
    print("Warning: anyone with this address (the key is in it) can use the model and download it; share it with the "
          "room only, and stop the server after the session.", flush=True)


def main(argv=None) -> int:
    from helpers.serving.process import running_server

    parser = argparse.ArgumentParser(prog="python -m helpers.demo", description="Start the course's server with the browser demo.")
    parser.add_argument("--smoke", action="store_true", help="use (or train) the quick smoke-mode model")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0: every network interface, "
                             f"for a room, with an API key: ${API_KEY_ENV}, or one generated and printed in the address)")
    parser.add_argument("--port", type=int, default=DEMO_PORT, help=f"port (default {DEMO_PORT}: one address for a whole class)")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        if args.host not in EVERY_ADDRESS and args.host not in machine_addresses():
            print(f"{args.host} is not an address of this machine: pass 0.0.0.0 (every network interface), or one of "
                  f"{', '.join(room_addresses('0.0.0.0')) or '127.0.0.1'}", file=sys.stderr)
            return 2
        if not port_free(args.port, "0.0.0.0" if args.host in EVERY_ADDRESS else args.host):
            print(with_fix(f"port {args.port} on {args.host} is in use", "port", args.port), file=sys.stderr)
            return 2
        key = room_key(args.host)
        exports = build_repository(smoke=args.smoke)
        with running_server(repository_root(), demo=True, name="demo", port=args.port, host=args.host,
                            api_key=key) as server:
            announce(server, args.host, args.port, key, exports)
            while True:
                time.sleep(3600)
    except Stopped as why:
        print(f"Stopped ({why}).", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
