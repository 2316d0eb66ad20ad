"""Latency and throughput, measured the same way for every runtime (chapters 03-06).

Single-sample latency: warm-up calls first (lazy initialisation, caches), then many timed calls, reported as percentiles
(p50 is the typical request, p99 the slow tail users notice). Throughput: whole batches for a fixed time. The thread
count is fixed by whoever creates the runtime and stated in the result, because it changes every number.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def latency(predict: Callable, sample, warmup: int = 20, repeats: int = 200) -> dict:
    """p50/p90/p99 wall time in milliseconds of `predict(sample)`."""
    for _ in range(warmup):
        predict(sample)
    times = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        predict(sample)
        times[i] = time.perf_counter() - started
    p50, p90, p99 = np.percentile(times * 1000, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "repeats": repeats}


def throughput(predict: Callable, batch, seconds: float = 2.0, warmup: int = 3) -> dict:
    """Samples per second when `predict` is called on whole `batch`es back to back for about `seconds`."""
    for _ in range(warmup):
        predict(batch)
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        predict(batch)
        calls += 1
    return {"samples_per_s": calls * len(batch) / elapsed, "batch_size": len(batch), "calls": calls}


def measure(predict: Callable, single, batch, threads: int, warmup: int = 20, repeats: int = 200, seconds: float = 2.0) -> dict:
    """Both measurements, with the thread count the runtime was created with."""
    return {**latency(predict, single, warmup, repeats), **throughput(predict, batch, seconds, warmup), "threads": threads}


COMPARISON_COLUMNS = ["size (kB)", "load (ms)", "p50_ms", "p90_ms", "p99_ms", "samples_per_s", "threads"]
COMPARISON_FORMAT = {"size (kB)": "{:,.0f}", "load (ms)": "{:.1f}", "p50_ms": "{:.3f}", "p90_ms": "{:.3f}", "p99_ms": "{:.3f}",
                     "samples_per_s": "{:,.0f}", "threads": "{:.0f}"}


def compare(runtimes: dict[str, dict], single, batch, repeats: int = 200, seconds: float = 2.0):
    """One row per runtime: size, load time, latency percentiles, throughput and threads, all measured by `measure`.

    `runtimes` maps a name to {"predict": callable, "bytes": file size, "load_s": load time, "threads": thread count}.
    """
    import pandas as pd

    rows = {
        name: {"size (kB)": r["bytes"] / 1e3, "load (ms)": r["load_s"] * 1000,
               **measure(r["predict"], single, batch, threads=r["threads"], repeats=repeats, seconds=seconds)}
        for name, r in runtimes.items()
    }
    return pd.DataFrame(rows).T[COMPARISON_COLUMNS]


def pareto_front(accuracy, latency, tolerance: float = 0.0) -> np.ndarray:
    """A boolean mask of the variants no other variant beats on both counts: at least as fast and at least as accurate,
    and strictly better on one, where accuracies closer than `tolerance` count as equal (differences within the noise of
    the test set should not decide what ships)."""
    accuracy, latency = np.asarray(accuracy, float), np.asarray(latency, float)
    dominated = [
        bool(np.any((latency <= t) & (accuracy >= a - tolerance) & ((latency < t) | (accuracy > a + tolerance))))
        for a, t in zip(accuracy, latency)
    ]
    return ~np.array(dominated, dtype=bool)


def onnx_operator_times(directory, batch, runs: int = 20, threads: int = 2):
    """Mean microseconds per call spent in each operator of the verified model.onnx in `directory`, on `batch`, from
    ONNX Runtime's own profiler: where the time goes, after the runtime's graph optimisations and fusions."""
    import json
    import tempfile
    from pathlib import Path

    import pandas as pd

    from helpers.runtimes import load_onnx

    with tempfile.TemporaryDirectory() as tmp:
        session = load_onnx(directory, threads, profile_prefix=f"{tmp}/profile")  # checks the manifest first
        name = session.get_inputs()[0].name
        for _ in range(runs):
            session.run(None, {name: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    times = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["args"]["op_name"]] = times.get(event["args"]["op_name"], 0) + event["dur"] / runs
    return pd.Series(times, name="microseconds per call").sort_values(ascending=False)


# --------------------------------------------------------------------------- roofline: what bounds a model's speed


def model_flops(model, example) -> int:
    """Floating-point operations of one forward pass of a PyTorch model on `example` (a multiply-add counts as 2),
    counted by PyTorch's own FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(example)
    return int(counter.get_total_flops())


def peak_gflops(threads: int, size: int = 1024, seconds: float = 1.0) -> float:
    """This machine's measured float32 matrix-multiply rate with `threads` threads (a practical compute roof), in
    ONNX Runtime's own kernels (MLAS), which run the course's ONNX models: another library's matrix multiply can be far
    slower on the same CPU (PyTorch's MKL kernels on AMD processors), and a roof below what the runtime reaches is no
    roof."""
    import onnx
    from onnx import TensorProto, helper

    from helpers.runtimes import load_onnx

    shape = [size, size]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("a", "b")],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    session = load_onnx(None, threads=threads, model_bytes=model.SerializeToString())  # built here: nothing to verify
    rng = np.random.default_rng(0)
    inputs = {n: rng.standard_normal(shape, dtype=np.float32) for n in ("a", "b")}
    session.run(None, inputs)  # warm-up
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, inputs)
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - started) / 1e9


def copy_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Measured memory bandwidth: bytes read plus bytes written per second by one large array copy (the memory roof)."""
    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    best = min(timed_copy(source, target) for _ in range(repeats))
    return 2 * source.nbytes / best / 1e9


def timed_copy(source: np.ndarray, target: np.ndarray) -> float:
    started = time.perf_counter()
    np.copyto(target, source)
    return time.perf_counter() - started


def activation_bytes(model, example) -> int:
    """Bytes of the float32 feature maps an nn.Sequential passes from layer to layer for `example`: memory traffic a
    roofline that counts only weights and input leaves out."""
    import torch

    total, x = 0, example
    with torch.no_grad():
        for layer in model.eval():
            x = layer(x)
            total += x.numel() * x.element_size()
    return total
