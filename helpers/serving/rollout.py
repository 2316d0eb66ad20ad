"""Rolling a new version out (chapter 11): which version answers a request that names none, and shadow traffic.

Both follow the model's config.json (model_config: `traffic_split`, `shadow`, `version_labels`):

* `choose(versions, key)` picks the version for an unpinned request. Without a split: the latest available version,
  as always. With one: a label, drawn with the split's percentages. A client's `X-Routing-Key` (a user id, a session)
  is hashed to a point of [0, 1), so the same key lands on the same side of the same split (sticky assignment, as
  Istio's consistent hashing and Seldon Core's experiments do); without a key the point is random. The labels' shares
  are laid along [0, 1) in the file's order, so while the order stays the same, a growing share keeps its users (with
  two labels, its interval only widens). A label whose version cannot answer (not loaded yet, or failed) gives its
  requests to the split's other labels, largest share first, then to the latest available version: a canary that
  fails to load is an error in its status, never an outage.

* `Shadow` sends a copy of each unpinned request to the shadow label's version *off the request path*: the request
  queues its input and the answer it got (microseconds, never waits: a full queue drops the copy and counts it), and
  one thread of its own runs the shadow version on batches of queued copies, compares its classes with the answers
  served, counts agreements, and keeps the latest disagreements for inspection (GET /v2/models/<m>/shadow). A shadow
  version that fails is counted ("error") and logged; the request it copied was answered long before.

With --workers N, each worker routes, shadows and keeps its log of disagreements on its own; the counters add up.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

from helpers.serving.repository import config_of

log = logging.getLogger("helpers.serving")

ROUTING_HEADER = "x-routing-key"
MAX_KEY_CHARS = 256  # a routing key is an id, not a payload
SHADOW_QUEUE = 1024  # copies waiting for the shadow thread; one more is dropped (and counted), never waited for
SHADOW_BATCH = 64  # copies per shadow call: the shadow version runs batched even when the served one runs row by row
SHADOW_POLL_S = 0.005  # how often the shadow thread looks for copies while it has none
KEPT_DISAGREEMENTS = 32  # the latest disagreements kept for GET /v2/models/<m>/shadow


def key_point(key: str) -> float:
    """A routing key's point of [0, 1): the same on every call, in every process and after a restart (Python's hash()
    is salted per process, so it would not do), and spread evenly for any set of keys."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_label(split: tuple[tuple[str, float], ...], point: float) -> str:
    """The label whose share of [0, 1), laid out in the split's order, holds `point`."""
    edge = 0.0
    for label, percent in split:
        edge += percent / 100
        if point < edge:
            return label
    return next(label for label, percent in reversed(split) if percent > 0)  # point at 1.0 after rounding


def choose(versions, key: str | None):
    """(the version state that answers an unpinned request, the label that chose it or None), from the model's
    versions and config (a repository.ModelVersions). Raises LookupError if no version is available."""
    config, available = config_of(versions), {v: s for v, s in versions.items() if s.state == "AVAILABLE"}
    if not available:
        raise LookupError("no available version")
    if config.split:
        point = key_point(key[:MAX_KEY_CHARS]) if key else random.random()
        label = split_label(config.split, point)
        fallbacks = [name for name, _ in sorted(config.split, key=lambda item: -item[1]) if name != label]
        for name in [label, *fallbacks]:
            state = available.get(config.labels.get(name))
            if state is not None:
                return state, name
    return available[max(available)], None


def shadow_state(versions, served):
    """The version that gets a copy of a request `served` answered, or None (no shadow, not available, or the served
    version itself)."""
    config = config_of(versions)
    state = versions.get(config.labels.get(config.shadow)) if config.shadow else None
    return state if state is not None and state.state == "AVAILABLE" and state is not served else None


@dataclass
class Copy:
    model: str
    state: object  # the shadow version's VersionState
    served_version: int
    x: np.ndarray
    y: np.ndarray  # the answer served


class Shadow:
    """The shadow thread and its queue. `submit` is called on the event loop; everything else happens in the thread.
    `count(model, served_version, shadow_version, outcome, n)` is the metrics hook (agree, disagree, error, dropped).

    The queue is a plain deque that the thread polls (every SHADOW_POLL_S while it is empty), not a queue.Queue: a
    Queue's put wakes the waiting thread on every request, and each wake-up takes the GIL from the event loop for a
    moment (measured: the callers' p99 rose by half); polled, the thread wakes a few hundred times a second at most and
    finds a few copies waiting. Polling less often makes bigger batches, longer bursts of CPU and a worse p99, and so
    does the lowest thread priority (the thread can then be preempted while it holds the GIL). The shadow's model
    calls still take CPU: on a machine without a spare core they compete with the served requests (chapter 11
    measures what that costs the callers)."""

    def __init__(self, count):
        self.count = count
        self.copies: deque[Copy] = deque()  # append and popleft are atomic: no lock between the loop and the thread
        self.disagreements: dict[str, deque] = {}  # model -> the latest KEPT_DISAGREEMENTS
        self.totals: dict[tuple, int] = {}  # (model, served_version, shadow_version, outcome) -> rows
        self.lock = threading.Lock()  # guards disagreements and totals, read by the route on the event loop
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="shadow", daemon=True)
        self.thread.start()

    def submit(self, model: str, state, served_version: int, x: np.ndarray, y: np.ndarray) -> None:
        if len(self.copies) >= SHADOW_QUEUE:  # the shadow is behind: lose the copy, never delay the caller
            self.record(model, served_version, state.version, "dropped", len(x))
            return
        self.copies.append(Copy(model, state, served_version, x, y))

    def close(self) -> None:
        """Compare what is queued, then stop the thread."""
        self.stopping.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        while True:
            if not self.copies:
                if self.stopping.is_set():
                    return
                self.stopping.wait(SHADOW_POLL_S)
                continue
            batch = []
            while self.copies and len(batch) < SHADOW_BATCH:
                batch.append(self.copies.popleft())
            for group in grouped(batch):
                self.compare(group)

    def compare(self, group: list[Copy]) -> None:
        """Run the shadow version on a group of copies (same model, versions and input shape) and count the rows whose
        top class agrees with the one served."""
        first = group[0]
        try:
            shadow_y = np.asarray(first.state.backend.predict(np.concatenate([c.x for c in group])))
        except Exception:
            log.exception("shadow version %d of model %s failed; the requests were answered by version %d",
                          first.state.version, first.model, first.served_version)
            self.record(first.model, first.served_version, first.state.version, "error", sum(len(c.x) for c in group))
            return
        served_y = np.concatenate([c.y for c in group])
        served_class, shadow_class = served_y.reshape(len(served_y), -1).argmax(1), shadow_y.reshape(len(shadow_y), -1).argmax(1)
        agree = served_class == shadow_class
        self.record(first.model, first.served_version, first.state.version, "agree", int(agree.sum()))
        self.record(first.model, first.served_version, first.state.version, "disagree", int((~agree).sum()))
        inputs = np.concatenate([c.x for c in group])
        with self.lock:
            kept = self.disagreements.setdefault(first.model, deque(maxlen=KEPT_DISAGREEMENTS))
            for row in np.flatnonzero(~agree)[-KEPT_DISAGREEMENTS:]:
                kept.append({"input": inputs[row].ravel().tolist(), "input_shape": list(inputs[row].shape),
                             "served": {"version": first.served_version, "class": int(served_class[row])},
                             "shadow": {"version": first.state.version, "class": int(shadow_class[row])}})

    def record(self, model: str, served: int, shadow: int, outcome: str, rows: int) -> None:
        if rows:
            self.count(model, served, shadow, outcome, rows)
            with self.lock:
                key = (model, served, shadow, outcome)
                self.totals[key] = self.totals.get(key, 0) + rows

    def report(self, model: str) -> dict:
        """This process's shadow comparisons for `model`: rows per outcome, by served and shadow version, and the
        latest disagreements."""
        with self.lock:
            rows = [{"served_version": served, "shadow_version": shadow, "outcome": outcome, "rows": n}
                    for (m, served, shadow, outcome), n in sorted(self.totals.items()) if m == model]
            return {"name": model, "comparisons": rows, "disagreements": list(self.disagreements.get(model, ()))}


def grouped(batch: list[Copy]) -> list[list[Copy]]:
    """The copies in groups that one shadow call can take: same model, same shadow and served versions, same row shape."""
    groups: dict[tuple, list[Copy]] = {}
    for copy in batch:
        groups.setdefault((copy.model, id(copy.state), copy.served_version, copy.x.shape[1:]), []).append(copy)
    return list(groups.values())
