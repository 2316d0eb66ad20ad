"""Rate limits per client: a token bucket per API key (or per address, without keys), charged per instance.

Why per instance and not per request: the cost of an inference, and what a client learns from it (a model-extraction
attack needs many labelled queries, chapter 12), grows with the rows it carries. A limit of 5 requests per second
would give a client batching 256 images per request 256 times the budget of one sending single images, so each
request costs one token per row.

A `TokenBucket(rate, burst)` holds up to `burst` tokens and refills continuously at `rate` per second. A request of
n rows is admitted if the bucket holds n tokens, which it then loses; otherwise it is refused and costs nothing (a
refused request was not run), and the answer says how long until n tokens exist (the server's Retry-After). A request
of more rows than `burst` could never be admitted: the server refuses it as a bad request instead.
Tokens are taken when a request is admitted, before it runs: one the server then sheds (503, queue full) or times out
(504) has spent them, as one that ran has, so that overloading the server never buys a client more queries. A client
whose bucket is already empty is refused before its body is read (no parsing spent on it), so a request too large to
ever pass gets 429 while the bucket is empty and 400 once it is not. Requests refused for their API key (401) never
reach a bucket: guessing keys is slowed by their length (and by a proxy's limits), not here.

`RateLimiter` keeps the buckets: one per API key (a bounded set: the keys the server was given) and, for a server
without keys (loopback only), one per client address. Addresses are not bounded by anything the server chose, so their
buckets are: beyond MAX_ADDRESSES, full ones are dropped first (a full bucket is what a new one would be: nothing is
lost), then the oldest. The clock is a parameter, so that a test can move time by hand.

With --workers N each worker keeps buckets of its own (like --max-connections): a client whose connections reach
several workers gets up to N times the budget.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time

MAX_ADDRESSES = 10_000  # per-address buckets kept (without API keys), beyond which full and then old ones are dropped
DEFAULT_BURST_S = 10.0  # without --rate-burst, a bucket holds this many seconds of the rate
EPSILON = 1e-9  # tokens: float refills (0.2 s x 5/s) must admit at the exact boundary, not a rounding error after it


def default_burst(rate: float) -> int:
    """The bucket size without --rate-burst: ten seconds of the rate, at least one instance."""
    return max(1, math.ceil(rate * DEFAULT_BURST_S))


def client_label(key: str | None) -> str:
    """How metrics and logs name a client: `key-` and the first 8 hex digits of its key's sha256 (never the key), or
    "anonymous" without one (never its address: one metric series per address would grow without bound)."""
    return "anonymous" if key is None else "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        if not rate > 0 or burst < 1:
            raise ValueError(f"a token bucket needs a rate above 0 and a burst of at least 1, got {rate} and {burst}")
        self.rate, self.burst, self.clock = float(rate), int(burst), clock
        self.tokens, self.updated = float(burst), clock()  # a new client starts with a full bucket

    def refill(self) -> float:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens

    def take(self, n: int) -> float:
        """0.0 if n tokens were there (and are now taken); else the seconds until they will be (nothing taken)."""
        tokens = self.refill()
        if n <= tokens + EPSILON:
            self.tokens = max(0.0, tokens - n)
            return 0.0
        return (n - tokens) / self.rate

    def wait(self, n: int) -> float:
        """The seconds until n tokens will be there (0.0: now), taking none."""
        return max(0.0, (n - self.refill() - EPSILON) / self.rate)

    def full(self) -> bool:
        return self.refill() >= self.burst


class RateLimiter:
    """Buckets by client: `take(client, rows)` is TokenBucket.take for that client's bucket. Called on the event loop
    and, for safety, from any thread: a lock guards the dictionary (held for microseconds)."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_addresses: int = MAX_ADDRESSES):
        TokenBucket(rate, burst, clock)  # refuse a bad rate or burst now, not at the first request
        self.rate, self.burst, self.clock, self.max_addresses = rate, burst, clock, max_addresses
        self.buckets: dict[str, TokenBucket] = {}
        self.addresses = 0  # buckets keyed by an address (not a key), the ones bounded
        self.lock = threading.Lock()

    def bucket(self, client: str) -> TokenBucket:
        """The bucket of `client`: "key-..." for an API key, "address:<host>" for a client without one."""
        found = self.buckets.get(client)
        if found is None:
            if client.startswith("address:"):
                self.addresses += 1
                if self.addresses > self.max_addresses:
                    self.prune()
            found = self.buckets[client] = TokenBucket(self.rate, self.burst, self.clock)
        return found

    def prune(self) -> None:
        """Drop full address buckets (nothing lost), then the oldest, until half the bound is left."""
        keep = self.max_addresses // 2
        addresses = [name for name in self.buckets if name.startswith("address:")]
        full = {name for name in addresses if self.buckets[name].full()}
        oldest = [name for name in addresses if name not in full]  # in creation order
        drop = [*full, *oldest[:max(0, len(oldest) - keep)]]
        for name in drop:
            del self.buckets[name]
        self.addresses -= len(drop)

    def take(self, client: str, rows: int) -> float:
        with self.lock:
            return self.bucket(client).take(rows)

    def wait(self, client: str, rows: int) -> float:
        with self.lock:
            return self.bucket(client).wait(rows)


def retry_after(seconds: float) -> int:
    """Retry-After is whole seconds: the wait rounded up, and at least 1 (0 would invite an immediate retry)."""
    return max(1, math.ceil(seconds))
