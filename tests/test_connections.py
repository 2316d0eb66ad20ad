"""The server's limits on slow and greedy clients (helpers/serving/connections.py), against a real server process on
127.0.0.1: stalled connections closed within their timeouts and counted while an honest client keeps being served,
the per-client limit, header size (431), body timeouts (408), and that honest slow or kept-alive clients are not hurt.
The attackers connect from 127.0.0.2 (Linux routes all of 127/8 to the loopback interface), the honest client from
127.0.0.1. The timeouts are set short (1-3 s) so that each test takes seconds; slack in the timing assertions allows
for a shared 2-core machine. The pure parts (per-client counting, the throttled log) are tested at the end."""

import logging
import re
import resource
import selectors
import socket
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
from metrics_text import metric
from prometheus_client import CollectorRegistry, Counter

from helpers.serving.connections import ConnectionGuard, ConnectionLimits, PerClientCount, ThrottledLog

pytestmark = pytest.mark.integration  # starts real server processes

X = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
INFER = "/v2/models/mnist/infer"
ATTACKER = "127.0.0.2"
SLACK_S = 1.0  # a stalled connection must see its end within its timeout plus this
BODY = orjson.dumps({"inputs": [{"name": "images", "shape": list(X.shape), "datatype": "FP32", "data": X.reshape(-1)}]},
                    option=orjson.OPT_SERIALIZE_NUMPY)
STALLED_BODY = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode()
STALLED_HEADERS = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: appl".encode()


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    from small_models import make_export, repository_of

    tmp = tmp_path_factory.mktemp("connections")
    directory, reference = make_export(tmp, seed=1, x=X)
    return repository_of(directory, tmp), reference


@pytest.fixture(scope="module")
def room_for_sockets():
    """Sockets for 1,000 attackers and the server's ends of them: raise this process's soft descriptor limit (the
    server, started after, inherits it), or skip saying why."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 4096
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, and the hard limit (ulimit -Hn) is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        probe = socket.socket()
        probe.bind((ATTACKER, 0))
        probe.close()
    except OSError as error:
        pytest.skip(f"cannot bind {ATTACKER} (loopback aliases are a Linux feature): {error}")


def serve(repository, **options):
    from helpers.serving.process import running_server

    return running_server(repository, name="limits", **options)


def port_of(server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def closed_by(server, reason: str) -> float:
    return metric(httpx.get(server.url + "/metrics").text, "http_connections_closed_total", reason=reason)


# --------------------------------------------------------------------------- attackers and the honest client


class Attack:
    """Raw sockets from ATTACKER that each send `payload` (b"": nothing) and stall. `watch()` records, per socket, when
    it saw the end of the connection (EOF or reset) and the bytes it received before it."""

    def __init__(self, port: int, payloads: list[bytes]):
        self.sockets, self.started, self.payloads = [], [], payloads
        for payload in payloads:
            s = socket.socket()
            s.bind((ATTACKER, 0))
            s.connect(("127.0.0.1", port))
            self.started.append(time.monotonic())
            if payload:
                s.sendall(payload)
            s.setblocking(False)
            self.sockets.append(s)
        self.ended = [None] * len(payloads)
        self.received = [b""] * len(payloads)

    def watch(self, until_s: float) -> None:
        selector = selectors.DefaultSelector()
        for i, s in enumerate(self.sockets):
            selector.register(s, selectors.EVENT_READ, i)
        deadline = time.monotonic() + until_s
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.05):
                i = key.data
                try:
                    data = key.fileobj.recv(65536)
                except ConnectionError:
                    data = b""
                if data:
                    self.received[i] += data
                else:
                    self.ended[i] = time.monotonic()
                    selector.unregister(key.fileobj)
        selector.close()

    def lifetimes(self, which) -> list[float]:
        """Seconds from connecting to the end of the connection, of the sockets `which` (indices); inf if still open."""
        return [(self.ended[i] - self.started[i]) if self.ended[i] else float("inf") for i in which]

    def close(self) -> None:
        for s in self.sockets:
            s.close()


class HonestClient(threading.Thread):
    """Asks for readiness and an inference from 127.0.0.1 over and over until stopped, recording every answer."""

    def __init__(self, url: str, reference: np.ndarray):
        super().__init__(daemon=True)
        self.url, self.reference = url, reference
        self.answers: list[tuple[str, int, float, bool]] = []  # (what, status, seconds, correct)
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                self.ask(http, "health", lambda: http.get("/v2/health/ready"))
                self.ask(http, "infer", lambda: http.post(INFER, content=BODY, headers={"Content-Type": "application/json"}))
                time.sleep(0.02)

    def ask(self, http, what, call) -> None:
        started = time.perf_counter()
        try:
            answer = call()
        except httpx.HTTPError:
            self.answers.append((what, 0, time.perf_counter() - started, False))
            return
        correct = answer.status_code == 200
        if correct and what == "infer":
            (tensor,) = answer.json()["outputs"]
            correct = np.allclose(np.reshape(tensor["data"], tensor["shape"]), self.reference, atol=1e-4)
        self.answers.append((what, answer.status_code, time.perf_counter() - started, correct))

    def finish(self) -> list[tuple[str, int, float, bool]]:
        self.stop.set()
        self.join(30)
        return self.answers


def assert_all_served(answers, during: str) -> None:
    assert len(answers) >= 10, f"the honest client got only {len(answers)} answers {during}"
    wrong = [a for a in answers if not a[3]]
    assert not wrong, f"{len(wrong)} of {len(answers)} honest requests failed {during}, e.g. {wrong[:3]}"
    latencies = sorted(a[2] for a in answers)
    print(f"honest client {during}: {len(answers)} answers, p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
          f"max {latencies[-1] * 1e3:.1f} ms")


def exchange(port: int, request: bytes, timeout_s: float = 10) -> tuple[int, dict, bytes, float]:
    """Send `request` from a raw socket, keep sending while the server reads, and read its answer until the end of the
    connection (or `timeout_s`): (status, headers, body, seconds until the end). Status 0: no answer."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    started, deadline, received, sent = time.monotonic(), time.monotonic() + timeout_s, b"", 0
    selector = selectors.DefaultSelector()
    selector.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    try:
        while time.monotonic() < deadline:
            events = selector.select(timeout=0.05)
            if not events:
                continue
            mask = events[0][1]
            if mask & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    break
                received += data
            elif mask & selectors.EVENT_WRITE:
                try:
                    sent += s.send(request[sent:sent + (1 << 20)])
                except ConnectionError:
                    selector.modify(s, selectors.EVENT_READ)
                if sent >= len(request):
                    selector.modify(s, selectors.EVENT_READ)
        ended = time.monotonic() - started
    finally:
        selector.close()
        s.close()
    return (*parse_answer(received), ended)


def parse_answer(raw: bytes) -> tuple[int, dict, bytes]:
    if not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


# --------------------------------------------------------------------------- stalled connections


def test_a_thousand_stalled_connections_are_closed_within_their_timeouts_and_counted(repository, room_for_sockets):
    """500 uploads that send their headers and `Content-Length: 1000` but never the body, 250 connections that stop in
    the middle of their headers, 250 that send nothing. --max-connections is raised above 1,000 here (it counts every
    open connection, stalled or not; the next test keeps the default and relies on the per-client limit)."""
    root, reference = repository
    header_s, body_s = 1.0, 1.5
    with serve(root, header_timeout_s=header_s, body_timeout_s=body_s, max_connections_per_client=0,
               max_connections=1200) as server:
        honest = HonestClient(server.url, reference)
        honest.start()
        attack = Attack(port_of(server), [STALLED_BODY] * 500 + [STALLED_HEADERS] * 250 + [b""] * 250)
        try:
            attack.watch(until_s=max(header_s, body_s) + SLACK_S + 3)
            answers = honest.finish()
            uploads, partial, silent = range(500), range(500, 750), range(750, 1000)
            body_lives, header_lives = attack.lifetimes(uploads), attack.lifetimes([*partial, *silent])
            print(f"stalled uploads closed after {min(body_lives):.2f}-{max(body_lives):.2f} s (body timeout {body_s} s); "
                  f"stalled headers after {min(header_lives):.2f}-{max(header_lives):.2f} s (header timeout {header_s} s)")
            assert max(body_lives) <= body_s + SLACK_S, f"a stalled upload lived {max(body_lives):.2f} s"
            assert min(body_lives) >= body_s - 0.1, f"a stalled upload was closed early, after {min(body_lives):.2f} s"
            assert max(header_lives) <= header_s + SLACK_S, f"a stalled request lived {max(header_lives):.2f} s"
            assert min(header_lives) >= header_s - 0.1, f"a stalled request was closed early, after {min(header_lives):.2f} s"
            for i in [*uploads, *partial]:  # a request that had begun is told why
                status, _, body = parse_answer(attack.received[i])
                assert status == 408, attack.received[i]
                assert orjson.loads(body)["error"] == (f"no part of the request body for {body_s:g} s" if i in uploads
                                                       else f"request headers not received within {header_s:g} s")
            assert all(attack.received[i] == b"" for i in silent)  # nothing asked, nothing answered
            assert_all_served(answers, "during 1,000 stalled connections")
            assert closed_by(server, "body_timeout") == 500
            assert closed_by(server, "header_timeout") == 500
        finally:
            attack.close()
        logged = server.log.read_text()
        lines = re.findall(r"closed \d+ connection\(s\) \[(\w+)\]", logged)
        assert 1 <= lines.count("header_timeout") <= 3 and 1 <= lines.count("body_timeout") <= 3, logged[-2000:]


def test_connections_beyond_the_per_client_limit_are_closed_at_once(repository, room_for_sockets):
    """With the default --max-connections (1,000), 1,000 stalled uploads from one address: those beyond the
    per-client limit are closed at once, the rest by the body timeout, and 127.0.0.1 is served throughout."""
    root, reference = repository
    limit, body_s = 100, 2.0
    with serve(root, body_timeout_s=body_s, max_connections_per_client=limit) as server:
        honest = HonestClient(server.url, reference)
        honest.start()
        attack = Attack(port_of(server), [STALLED_BODY] * 1000)
        try:
            attack.watch(until_s=body_s + SLACK_S + 3)
            answers = honest.finish()
            lives = sorted(attack.lifetimes(range(1000)))
            at_once = [t for t in lives if t < 0.5]
            print(f"per-client limit {limit}: {len(at_once)} closed at once (within {max(at_once):.3f} s), the rest after "
                  f"{lives[len(at_once)]:.2f}-{lives[-1]:.2f} s (body timeout {body_s} s)")
            assert len(at_once) == 1000 - limit
            assert all(body_s - 0.1 <= t <= body_s + SLACK_S for t in lives[len(at_once):]), lives[len(at_once):][:5]
            assert_all_served(answers, f"during 1,000 stalled uploads from one address (limit {limit})")
            assert closed_by(server, "per_client_limit") == 1000 - limit
            assert closed_by(server, "body_timeout") == limit
            # the address's slots are free again once its connections are gone
            assert httpx.get(server.url + "/v2/health/ready").status_code == 200
        finally:
            attack.close()


# --------------------------------------------------------------------------- headers, bodies, honest slow clients


@pytest.fixture(scope="module")
def server(repository, room_for_sockets):
    with serve(repository[0], header_timeout_s=2, body_timeout_s=1, body_deadline_s=3) as running:
        yield running


def request_with_headers(size: int) -> bytes:
    """A GET of /v2/health/ready exactly `size` bytes long, padded with one header."""
    start, end = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def assert_refused_headers(status, headers, body) -> None:
    assert status == 431, (status, body[:200])
    assert headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert orjson.loads(body) == {"error": "request headers exceed the limit of 16,384 bytes"}


def test_headers_just_under_the_limit_are_served_and_just_over_it_refused(server):
    status, _, body, _ = exchange(port_of(server), request_with_headers(16 * 1024))
    assert status == 200, body
    assert_refused_headers(*exchange(port_of(server), request_with_headers(16 * 1024 + 64))[:3])


def test_a_20_mb_header_and_a_hundred_1_mb_headers_get_431_and_the_server_keeps_serving(server):
    port = port_of(server)
    huge = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000_000 + b"\r\n\r\n"
    status, headers, body, seconds = exchange(port, huge)
    assert_refused_headers(status, headers, body)
    assert seconds < 3, f"the 20 MB header took {seconds:.1f} s to be refused"
    many = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-Big-%d: " % i + b"a" * (1 << 20) + b"\r\n" for i in range(100)) + b"\r\n"
    assert_refused_headers(*exchange(port, many)[:3])
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200
    assert closed_by(server, "headers_too_large") >= 2


def test_a_stalled_body_gets_408_within_the_body_timeout_and_the_server_keeps_serving(server):
    status, headers, body, seconds = exchange(port_of(server), STALLED_BODY + b'{"inputs": [')
    assert status == 408 and headers["content-type"] == "application/json", (status, body)
    assert orjson.loads(body) == {"error": "no part of the request body for 1 s"}
    assert 0.9 <= seconds <= 1 + SLACK_S, seconds
    assert httpx.get(server.url + "/v2/health/ready").status_code == 200


def test_a_body_dripped_slower_than_its_deadline_gets_408(server):
    """A byte every 0.5 s never pauses for the body timeout (1 s), but the whole body has a deadline (3 s)."""
    s = socket.create_connection(("127.0.0.1", port_of(server)))
    started = time.monotonic()
    s.sendall(STALLED_BODY)
    s.settimeout(0.5)
    received = b""
    while time.monotonic() - started < 3 + SLACK_S + 1:
        try:
            s.sendall(b" ")
            data = s.recv(65536)
        except TimeoutError:
            continue
        except ConnectionError:
            break
        if not data:
            break
        received += data
    seconds = time.monotonic() - started
    s.close()
    status, _, body = parse_answer(received)
    assert status == 408 and orjson.loads(body) == {"error": "request body not received within 3 s"}, received
    assert 2.9 <= seconds <= 3 + SLACK_S, seconds


def test_a_slow_honest_upload_and_a_kept_alive_connection_are_served(server, repository):
    """Pieces of a body 0.5 s apart (under the 1 s body timeout) and an idle pause on a kept-alive connection longer
    than the header timeout (2 s; uvicorn's keep-alive timeout of 5 s governs that pause) are no reason to close."""
    s = socket.create_connection(("127.0.0.1", port_of(server)))
    s.settimeout(10)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    s.sendall(head.encode())
    for i in range(0, len(BODY), len(BODY) // 4 + 1):
        time.sleep(0.5)
        s.sendall(BODY[i:i + len(BODY) // 4 + 1])
    status, _, body = read_one_answer(s)
    assert status == 200
    (tensor,) = orjson.loads(body)["outputs"]
    np.testing.assert_allclose(np.reshape(tensor["data"], tensor["shape"]), repository[1], atol=1e-4)
    time.sleep(2.5)
    s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_one_answer(s)[0] == 200
    s.close()


def read_one_answer(s: socket.socket) -> tuple[int, dict, bytes]:
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += s.recv(65536) or pytest.fail(f"connection closed after {raw!r}")
    status, headers, body = parse_answer(raw)
    while len(body) < int(headers["content-length"]):
        body += s.recv(65536) or pytest.fail("connection closed mid-answer")
    return status, headers, body


# --------------------------------------------------------------------------- the pure parts


def test_per_client_count_admits_up_to_the_limit_per_address_and_frees_on_release():
    count = PerClientCount(2)
    assert count.admit("a") and count.admit("a") and not count.admit("a")
    assert count.admit("b")  # another address is not held back by the first
    count.release("a")
    assert count.admit("a") and not count.admit("a")
    for _ in range(2):
        count.release("a")
    count.release("b")
    assert count.open == {}  # addresses with no connection left are forgotten
    assert all(PerClientCount(0).admit("a") for _ in range(1000))  # 0: no limit
    assert count.admit(None) and count.admit(None) and count.admit(None)  # Unix sockets have no address


def test_throttled_log_writes_one_line_per_reason_per_interval_with_the_count(caplog):
    now, scheduled = [0.0], []
    throttled = ThrottledLog(logging.getLogger("test.throttled"), every_s=5, clock=lambda: now[0],
                             schedule=lambda delay_s, then: scheduled.append((delay_s, then)))
    with caplog.at_level(logging.WARNING, "test.throttled"):
        assert throttled.note("body_timeout", "first")
        now[0] = 1.0
        assert not any(throttled.note("body_timeout", f"more {i}") for i in range(99))
        assert throttled.note("header_timeout", "another reason logs at once")
        assert [delay for delay, _ in scheduled] == [4.0]  # one write-out for the 99 held back, when the interval ends
        now[0] = 5.0
        scheduled[0][1]()
        now[0] = 10.0
        assert throttled.note("body_timeout", "later")
        throttled.flush("body_timeout")  # nothing held back: nothing written
    assert [r.getMessage() for r in caplog.records] == [
        "closed 1 connection(s) [body_timeout] since the last such line; latest: first",
        "closed 1 connection(s) [header_timeout] since the last such line; latest: another reason logs at once",
        "closed 99 connection(s) [body_timeout] since the last such line; latest: more 98",
        "closed 1 connection(s) [body_timeout] since the last such line; latest: later",
    ]


def test_guard_counts_every_reason_from_zero():
    registry = CollectorRegistry()
    counter = Counter("http_connections_closed_total", "closed", ["reason"], registry=registry)
    guard = ConnectionGuard(ConnectionLimits(), counter, logging.getLogger("test.guard"))
    guard.closed("per_client_limit", "127.0.0.2", "too many")
    values = {s.labels["reason"]: s.value for s in registry.collect().__next__().samples if s.name.endswith("_total")}
    assert values == {"header_timeout": 0, "body_timeout": 0, "headers_too_large": 0, "per_client_limit": 1}
