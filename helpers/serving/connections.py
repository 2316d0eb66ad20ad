"""Limits on what one HTTP connection may hold: time to send its headers and its body, header size, and connections per
client address. `limited_protocol(limits, counter)` is the uvicorn protocol class the server runs (`http=` of
`uvicorn.run`): uvicorn's own httptools protocol with these checks added.

Why: uvicorn bounds the time between requests (`timeout_keep_alive`, 5 s) and the number of connections
(`limit_concurrency`, the server's `--max-connections`, 1,000), but not the time a client takes to send a request nor
its header size. A client that opens connections and then sends nothing, half its headers, or a `Content-Length` it
never delivers holds each connection forever; a thousand of them fill `--max-connections` and every honest request is
answered 503. Each limit below closes one way of doing that:

    limit                    default  what happens past it
    header_timeout_s         10 s     headers not complete this long after the connection opened (or, on a kept-alive
                                      connection, after the next request's first byte): closed, with 408 + JSON if the
                                      request had begun
    body_timeout_s           30 s     no piece of the body for this long: 408 + JSON if nothing was answered yet, closed
    body_deadline_s          120 s    the whole body not received this long after its headers: the same
    max_header_bytes         16 KiB   request line and headers larger than this: 431 + JSON, closed
    max_per_client           256      one more open connection from the same address: closed at once (0: no limit)

The body has both a gap and a deadline: a gap alone (what nginx has) lets a client drip one byte per gap and hold a
connection for as long as its declared length lasts; a deadline alone would have to be long enough for the slowest
honest upload. 120 s for the server's largest body (4 MiB, `--max-body-bytes`) asks for ~35 kB/s, far below any
network a model is served over. The per-client limit is what keeps one address from taking all of `--max-connections`
during the timeouts: 256 is four times the most the course's own load tests open from 127.0.0.1 (wrk at 64
connections in chapter 06), and leaves three quarters of the default 1,000 to other addresses. Behind a reverse proxy
every client has the proxy's address: raise it or set 0 there, and let the proxy limit clients.

By comparison: nginx closes a connection whose headers take longer than `client_header_timeout` (60 s) or whose body
pauses longer than `client_body_timeout` (60 s, between two reads; no whole-body deadline), answers 400/414 past
`large_client_header_buffers` (4 x 8 KiB) and limits connections per address only if configured (`limit_conn`).
Node's http server has `headersTimeout` 60 s, `requestTimeout` 300 s for the whole request and 16 KiB of headers;
h11 (uvicorn's other parser) allows 16 KiB. TF Serving's and Triton's HTTP front ends have no documented limits of this
kind: they are meant to run behind a proxy or a load balancer that has them, as this server would be in production.

Each connection closed by a limit is counted in `http_connections_closed_total{reason}` (reason: header_timeout,
body_timeout, headers_too_large, per_client_limit; the counter is the server's, in its registry, passed in by
`python -m helpers.serving`) and logged, at most one line per reason every few seconds: under attack, one line per
connection would flood the log with the attacker's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("helpers.serving.connections")

REASONS = ("header_timeout", "body_timeout", "headers_too_large", "per_client_limit")
LOG_EVERY_S = 5.0  # at most one log line per reason this often
# After a 408 or 431 the server stops reading the request but keeps draining what the client still sends, for this
# long or this many bytes, so that the client reads the answer: closing with unread data resets the connection, and a
# reset can discard the answer before the client reads it (nginx's lingering close, briefer)
LINGER_S = 1.0
LINGER_BYTES = 1 << 20


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0  # the longest pause between two pieces of a request body
    body_deadline_s: float = 120.0  # the whole body, from the end of its headers
    max_header_bytes: int = 16 * 1024  # request line and headers
    max_per_client: int = 256  # open connections from one address (0: no limit)


class PerClientCount:
    """Open connections by client address, within a limit (0: none)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.open: dict[str, int] = {}

    def admit(self, address: str | None) -> bool:
        """Count one more connection from `address` unless that would pass the limit. A connection without an address
        (a Unix socket) is admitted and not counted: release it or not, it makes no difference."""
        if address is None:
            return True
        count = self.open.get(address, 0)
        if self.limit and count >= self.limit:
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str | None) -> None:
        count = self.open.get(address, 0)
        if count > 1:
            self.open[address] = count - 1
        else:  # the last one: forget the address, so that the table holds only addresses with open connections
            self.open.pop(address, None)


class ThrottledLog:
    """One warning per reason every `every_s` at most, saying how many events it stands for. With `schedule(delay_s,
    callback)` (the event loop's call_later), the events held back are written out when their interval ends, so that
    a burst is logged as its first event and then one line with the rest."""

    def __init__(self, logger: logging.Logger, every_s: float = LOG_EVERY_S, clock=time.monotonic, schedule=None):
        self.logger, self.every_s, self.clock, self.schedule = logger, every_s, clock, schedule
        self.last: dict[str, float] = {}  # when each reason was last written
        self.unlogged: dict[str, int] = {}
        self.latest: dict[str, str] = {}
        self.pending: set[str] = set()  # reasons with a write-out scheduled

    def note(self, reason: str, message: str) -> bool:
        """Count one event; write it (with those held back before it) if the reason's last line is old enough.
        Returns whether it wrote."""
        self.unlogged[reason] = self.unlogged.get(reason, 0) + 1
        self.latest[reason] = message
        now = self.clock()
        if reason in self.last and now - self.last[reason] < self.every_s:
            if self.schedule is not None and reason not in self.pending:
                self.pending.add(reason)
                self.schedule(self.last[reason] + self.every_s - now, lambda: self.flush(reason))
            return False
        self.write(reason, now)
        return True

    def flush(self, reason: str) -> None:
        self.pending.discard(reason)
        if self.unlogged.get(reason):
            self.write(reason, self.clock())

    def write(self, reason: str, now: float) -> None:
        self.last[reason] = now
        count, message = self.unlogged.pop(reason), self.latest.pop(reason)
        self.logger.warning("closed %d connection(s) [%s] since the last such line; latest: %s", count, reason, message)


class ConnectionGuard:
    """What every connection of one server shares: the limits, the per-client table, the counter and the log."""

    def __init__(self, limits: ConnectionLimits, closed_counter, logger: logging.Logger = log):
        self.limits = limits
        self.clients = PerClientCount(limits.max_per_client)
        self.counted = {reason: closed_counter.labels(reason) for reason in REASONS}  # every series exists from 0
        # called on the event loop (by a connection), so the loop is the running one then
        self.log = ThrottledLog(logger, schedule=lambda delay_s, then: asyncio.get_running_loop().call_later(delay_s, then))

    def closed(self, reason: str, address: str | None, detail: str) -> None:
        self.counted[reason].inc()
        self.log.note(reason, f"{address or 'a client'}: {detail}")


def limited_protocol(limits: ConnectionLimits, closed_counter) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for `uvicorn.run(http=...)`: uvicorn makes one per connection, so what the connections share
    (`ConnectionGuard`) is a class attribute. `closed_counter` is a Prometheus counter labelled by reason."""
    guard = ConnectionGuard(limits, closed_counter)
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"guard": guard})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `guard` (see the module docstring).

    One timer at most per connection: the header timer from the connection's start (or a kept-alive connection's next
    request) until its headers are complete, then the body timer until the body is. Neither runs while uvicorn's
    keep-alive timer does (between requests) or while the app works on a request. Both are armed only when a read
    leaves the request incomplete: a request that arrives in one piece, the common case, never creates a timer."""

    guard: ConnectionGuard

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = self.guard.limits
        self.address: str | None = None  # counted in guard.clients while the connection is open
        self.reading: str | None = "headers"  # "headers", "body", or None: no request in progress
        self.begun = False  # a byte of the current request has arrived
        self.requests_begun = 0
        self.header_bytes = 0  # the current request's line and headers, as parsed
        self.header_reads = 0  # the current request's reads that held headers only (see data_received)
        self.oversized = False
        self.draining = 0  # bytes discarded after an answer that ends the connection (see `finish`)
        self.timer = None
        self.body_started = self.body_seen = 0.0

    # ------------------------------------------------------------------ connection

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if not self.guard.clients.admit(address):
            self.guard.closed("per_client_limit", address, f"more than {self.limits.max_per_client} open connections "
                              "from this address")
            transport.abort()  # nothing was read or written: no need to say goodbye, and the descriptor is freed now
            return
        self.address = address or ""
        self.arm(self.limits.header_timeout_s, self.header_timed_out)

    def connection_lost(self, exc) -> None:
        self.disarm()
        if self.address is not None:
            self.guard.clients.release(self.address or None)
            self.address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.draining:
            self.drain(len(data))
            return
        headers_before, begun = self.reading == "headers", self.requests_begun
        super().data_received(data)  # the parser calls the on_* methods below
        if self.oversized:
            self.refuse_headers()
        elif self.transport.is_closing() or self.transport.get_protocol() is not self:
            self.disarm()  # answered 400 by uvicorn, or handed over to another protocol
        elif self.reading == "headers":
            # httptools keeps a header's value to itself until the header ends, so a huge value is only seen here:
            # a read that began and ended inside one request's headers held nothing else
            self.header_reads += len(data) if headers_before and self.requests_begun == begun else 0
            if self.header_reads > self.limits.max_header_bytes:
                self.refuse_headers()
            elif self.timer is None:
                self.arm(self.limits.header_timeout_s, self.header_timed_out)
        elif self.reading == "body" and self.timer is None:
            self.arm(self.limits.body_timeout_s, self.body_timed_out)

    # ------------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading, self.begun = "headers", True
        self.requests_begun += 1
        self.header_bytes = self.header_reads = 0

    def on_url(self, url: bytes) -> None:
        self.count_header_bytes(len(url))
        if not self.oversized:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.count_header_bytes(len(name) + len(value) + 4)  # ": " and CRLF
        if not self.oversized:
            super().on_header(name, value)

    def count_header_bytes(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > self.limits.max_header_bytes:
            self.oversized = True  # answered in data_received, once the parser is done with this read

    def on_headers_complete(self) -> None:
        if self.oversized:
            return  # no app for a request refused: the callbacks below do nothing either
        self.disarm()
        self.reading = "body"
        self.body_started = self.body_seen = self.loop.time()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.oversized:
            self.body_seen = self.loop.time()
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.oversized:
            self.disarm()
            self.reading, self.begun = None, False
            super().on_message_complete()

    # ------------------------------------------------------------------ timers

    def arm(self, delay_s: float, callback) -> None:
        self.disarm()
        self.timer = self.loop.call_later(delay_s, callback)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def header_timed_out(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # uvicorn stopped reading (a pipelined request waits): the wait is the server's
            self.arm(self.limits.header_timeout_s, self.header_timed_out)
            return
        detail = f"request headers not received within {self.limits.header_timeout_s:g} s"
        self.guard.closed("header_timeout", self.address, detail)
        if self.begun and self.answerable():
            self.finish(408, detail)
        else:  # a connection that never sent a byte gets no answer, like one idle past the keep-alive timeout
            self.transport.close()

    def body_timed_out(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app has not taken the body read so far: the wait is the server's
            self.body_seen = now
        due = min(self.body_seen + self.limits.body_timeout_s, self.body_started + self.limits.body_deadline_s)
        if now < due:  # a piece arrived since the timer was armed: wait for the rest (one timer, not one per piece)
            self.arm(due - now, self.body_timed_out)
            return
        gap = now - self.body_seen >= self.limits.body_timeout_s
        detail = (f"no part of the request body for {self.limits.body_timeout_s:g} s" if gap else
                  f"request body not received within {self.limits.body_deadline_s:g} s")
        self.guard.closed("body_timeout", self.address, detail)
        if self.answerable():
            self.cycle.disconnected = True  # the app's own answer, whenever it comes, is dropped,
            self.cycle.message_event.set()  # and its wait for the body ends now
            self.finish(408, detail)
        else:  # the app answered already (413 before reading the body, say): just close
            self.transport.close()

    # ------------------------------------------------------------------ answers that end a connection

    def refuse_headers(self) -> None:
        self.disarm()
        detail = f"request headers exceed the limit of {self.limits.max_header_bytes:,} bytes"
        self.guard.closed("headers_too_large", self.address, detail)
        if self.answerable():
            self.finish(431, detail)
        else:  # the previous request's answer is still being written: no room for this one
            self.transport.close()

    def answerable(self) -> bool:
        """Whether the connection has no answer in progress, so one can be written now: the current request's app
        has not started answering, or there is none (the previous request's answer is complete)."""
        return self.cycle is None or not self.cycle.response_started or self.cycle.response_complete

    def finish(self, status: int, message: str) -> None:
        """Answer `status` with {"error": message}, then close: write the answer and end our side at once, but keep
        reading (and dropping) what the client still sends for a moment, so that it can read the answer."""
        body = orjson.dumps({"error": message})
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
        self.transport.write(b"".join(head) + body)
        self.draining = 1
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client sees the answer, then the end of the connection
        self.flow.resume_reading()
        self.arm(LINGER_S, self.transport.close)

    def drain(self, n: int) -> None:
        self.draining += n
        if self.draining > LINGER_BYTES:
            self.transport.close()
