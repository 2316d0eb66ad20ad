"""Chapter 08: a DistributedDataParallel training script written in the notebook, launched with torchrun and checked
against helpers.distributed's; a Ray Serve deployment with @serve.batch written in the notebook, called over HTTP and
checked against helpers.ray_serving's and in-process ONNX Runtime; and the answers that prove its exercise checks
decide (none of them starts Ray, and only the worked solution of exercise 1 starts torchrun)."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "ddp training script": "helpers.distributed.run_workers",
    "ray serve batched deployment": "helpers.ray_serving.model_app",
}

READ_RESULTS = 'timed = json.loads((paths.artifacts() / "ddp_allreduce.json").read_text())  # written by the run above\n'

EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "seconds per step, not milliseconds": READ_RESULTS + '''
allreduce_ms = timed["allreduce_ms_per_step"]
step_ms = timed["history"][0]["seconds"] / timed["steps"]
''',
            "the whole epoch, not one step": READ_RESULTS + '''
allreduce_ms = timed["allreduce_ms_per_step"]
step_ms = 1000 * timed["history"][0]["seconds"]
''',
            "the all-reduce of the whole epoch": READ_RESULTS + '''
allreduce_ms = timed["allreduce_ms_per_step"] * timed["steps"]
step_ms = 1000 * timed["history"][0]["seconds"] / timed["steps"]
''',
        },
        "right": {
            "steps counted from the losses logged": READ_RESULTS + '''
epoch = timed["history"][0]
step_ms, allreduce_ms = epoch["seconds"] * 1e3 / len(epoch["losses"]), float(timed["allreduce_ms_per_step"])
''',
        }},
    2: {"kind": "code",
        "wrong": {
            "the old key, target_num_ongoing_requests_per_replica": '''
autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_num_ongoing_requests_per_replica": 4, "upscale_delay_s": 0.5,
               "downscale_delay_s": 600}
''',
            "the downscale delay in minutes": '''
autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4, "upscale_delay_s": 0.5,
               "downscale_delay_s": 10}
''',
            "the upscale delay in milliseconds": '''
autoscaling = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4, "upscale_delay_s": 500,
               "downscale_delay_s": 600}
''',
            "a fixed 2 replicas": '''
autoscaling = {"min_replicas": 2, "max_replicas": 2, "target_ongoing_requests": 4, "upscale_delay_s": 0.5,
               "downscale_delay_s": 600}
''',
        },
        "right": {
            "dict(), floats, 10 * 60, and a starting replica count": '''
autoscaling = dict(min_replicas=1, initial_replicas=1, max_replicas=2, target_ongoing_requests=4.0, upscale_delay_s=0.5,
                   downscale_delay_s=10 * 60.0)
''',
        }},
    3: {"kind": "code",
        "wrong": {
            "the sum, not the mean": '''
def allreduce_mean(buffers):
    total = np.sum(buffers, axis=0)
    return [total.copy() for _ in buffers]
''',
            "a reduce: only worker 0 gets the mean": '''
def allreduce_mean(buffers):
    return [np.mean(buffers, axis=0)] + [b.copy() for b in buffers[1:]]
''',
            "reduce-scatter without the all-gather": '''
def allreduce_mean(buffers):
    world = len(buffers)
    chunks = [[c.copy() for c in np.array_split(b, world)] for b in buffers]
    for step in range(world - 1):
        sent = [(r, (r - step) % world, chunks[r][(r - step) % world].copy()) for r in range(world)]
        for r, i, chunk in sent:
            chunks[(r + 1) % world][i] += chunk
    return [np.concatenate(worker) / world for worker in chunks]
''',
            "averaged in place, into worker 0's buffer": '''
def allreduce_mean(buffers):
    for b in buffers[1:]:
        buffers[0] += b
    buffers[0] /= len(buffers)
    return [buffers[0].copy() for _ in buffers]
''',
        },
        "right": {
            "np.mean, one copy per worker": '''
def allreduce_mean(buffers):
    mean = np.mean(np.stack(buffers), axis=0)
    return [mean.copy() for _ in buffers]
''',
            "torch.stack, the same array for everyone": '''
def allreduce_mean(buffers):
    mean = torch.stack([torch.from_numpy(b) for b in buffers]).mean(dim=0).numpy()
    return [mean] * len(buffers)
''',
        }},
}
