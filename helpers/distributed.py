"""Data-parallel training with torch.distributed (chapter 08), one script for every worker, started by torchrun:

    torchrun --standalone --nproc-per-node 2 -m helpers.distributed --epochs 2 --out result.json

Every worker process holds a full copy of the model and trains on its own shard of each global batch
(DistributedSampler). After backward(), DistributedDataParallel averages the workers' gradients with an all-reduce, so
every copy takes the same optimizer step. With one process and the same global batch, the batches are the same images
in the same order (when the image count divides evenly among the workers), so for a model without randomness inside
(no Dropout, as the chapter's source_cnn) the two runs compute the same thing; only the work is split.

`run_workers` starts torchrun from a notebook and always stops every process it started (`helpers.processes.stop`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from helpers import paths
from helpers.processes import stop


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="source_cnn", help="an architecture from helpers.models")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--global-batch", type=int, default=128, help="images per optimizer step, summed over workers")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-images", type=int, default=60_000)
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads per worker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-allreduce", action="store_true",
                        help="also time one explicit all-reduce of the gradients per step (exercise 2)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file rank 0 writes its results to")
    return parser.parse_args(argv)


def shard_batches(n: int, global_batch: int, world: int, rank: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The image indices of this worker's local batches for one epoch, as torch's DistributedSampler + DataLoader
    produce them when `n` divides evenly among the workers (otherwise the sampler repeats indices to pad): one
    permutation for everyone, worker r taking every world-th index from r, cut into local batches of global_batch / world."""
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).numpy()[rank::world]
    local = global_batch // world
    return [order[i : i + local] for i in range(0, len(order), local)]


def train(args) -> dict:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from helpers import data, models, training

    dist.init_process_group("gloo")  # gloo: the CPU backend (nccl is for GPUs)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.global_batch % world:
        raise ValueError(f"--global-batch {args.global_batch} must divide evenly among {world} workers")
    torch.set_num_threads(args.threads)
    mnist = data.load_mnist()
    x = torch.from_numpy(training.images_for("torch", mnist.x_train[: args.train_images]))
    y = torch.from_numpy(mnist.y_train[: args.train_images].astype(np.int64))
    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP also copies rank 0's to the others)
    model = models.torch_model(args.model)
    ddp = DistributedDataParallel(model)
    sampler = DistributedSampler(TensorDataset(x, y), num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.global_batch // world, sampler=sampler)
    optimizer = torch.optim.Adam(ddp.parameters(), lr=args.lr)
    history, allreduce_s, steps = [], 0.0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every worker
        dist.barrier()
        started, losses = time.perf_counter(), []
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(ddp(xb), yb)
            loss.backward()  # DDP all-reduces the gradients here, overlapped with the backward pass
            if args.time_allreduce:
                allreduce_s += time_allreduce(model)
            optimizer.step()
            logged = loss.detach().clone()
            dist.all_reduce(logged)  # the mean over workers is the loss of the whole global batch, comparable across runs
            losses.append(logged.item() / world)
            steps += 1
        dist.barrier()
        history.append({"epoch": epoch + 1, "seconds": time.perf_counter() - started, "loss": float(np.mean(losses)),
                        "losses": losses})
    result = None
    if rank == 0:
        logits = training.torch_logits(model, training.images_for("torch", mnist.x_test))
        result = {"world_size": world, "threads_per_worker": args.threads, "global_batch": args.global_batch,
                  "local_batch": args.global_batch // world, "epochs": args.epochs, "train_images": len(x),
                  "steps": steps, "history": history, "test_accuracy": float((logits.argmax(1) == mnist.y_test).mean()),
                  "allreduce_ms_per_step": 1000 * allreduce_s / steps if args.time_allreduce else None,
                  "parameters": models.count_parameters(model)}
        args.out.write_text(json.dumps(result, indent=2))
    dist.destroy_process_group()
    return result


def time_allreduce(model) -> float:
    """Seconds for one extra all-reduce of all gradients (what DDP does inside backward, measured on its own)."""
    import torch
    import torch.distributed as dist

    flat = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    started = time.perf_counter()
    dist.all_reduce(flat)
    return time.perf_counter() - started


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


# --------------------------------------------------------------------------- starting workers from a notebook


def torchrun_command(nproc: int, script_args: list[str], nnodes: int = 1, rdzv_endpoint: str | None = None) -> list[str]:
    """The torchrun command line for `nproc` workers per node. One node: --standalone (a private rendezvous on this
    machine). Several nodes: the same command on every node with --nnodes and the address of a rendezvous endpoint."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        command.append("--standalone")
    else:
        command += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", "--rdzv-id=mnist-ddp"]
    return command + ["-m", "helpers.distributed", *script_args]


def run_workers(nproc: int, out: Path, timeout_s: float = 600, **options) -> dict:
    """Run the training script under torchrun with `nproc` workers on this machine; return rank 0's results. `options`
    are the script's flags (epochs=2, global_batch=128, ...). Whatever happens (an error, a timeout, an interrupted
    cell), torchrun and every worker under it are stopped before this returns: no worker outlives the call."""
    if options.get("global_batch", 128) % nproc:
        raise ValueError(f"global_batch {options.get('global_batch', 128)} must divide evenly among {nproc} workers")
    args = [f"--out={out}"]
    for flag, value in options.items():
        args += [f"--{flag.replace('_', '-')}"] if value is True else [] if value is False else [f"--{flag.replace('_', '-')}={value}"]
    out.unlink(missing_ok=True)
    log = paths.artifacts() / "logs" / f"torchrun-{nproc}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(options.get("threads", 1))}  # torchrun would set 1 and warn
    with open(log, "w") as output:
        process = subprocess.Popen(torchrun_command(nproc, args), stdout=output, stderr=subprocess.STDOUT,
                                   env=env, cwd=paths.ROOT)
        try:
            code = process.wait(timeout=timeout_s)
        finally:
            stop(process)  # torchrun and every worker: each runs in a session of its own, out of torchrun's group
    if code != 0 or not out.exists():
        lines = log.read_text().splitlines()
        # the workers' own error, not torchrun's summary of it that follows
        causes = [line for line in lines if re.match(r"^(\[rank\d+\]: )?[A-Za-z_.]*(Error|Exception): ", line) and "ChildFailedError" not in line]
        raise RuntimeError(f"torchrun with {nproc} workers failed (exit code {code}): {causes[0] if causes else 'see the log'}; "
                           f"the whole output is in {log}")
    return json.loads(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
