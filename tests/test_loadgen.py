"""helpers.serving.loadgen against a small HTTP server in a thread: wrk sends every one of several bodies in turn, and
the open loop (`paced`) counts each latency from when its request was due, so a server that falls behind shows it."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.serving import loadgen


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as both load generators expect
    disable_nagle_algorithm = True  # else each small write of the answer waits for the client's delayed ACK (40 ms)
    delay_s = 0.0
    bodies: list = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.bodies.append(body)
        time.sleep(self.delay_s)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server():
    def start(delay_s: float = 0.0):
        handler = type("Handler", (Recorder,), {"delay_s": delay_s, "bodies": [], "lock": threading.Lock()})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/infer", handler

    started = []
    yield start
    for httpd in started:
        httpd.shutdown()


@pytest.mark.skipif(not loadgen.available(), reason="wrk is not installed")
def test_wrk_sends_each_of_several_bodies_in_turn(server):
    url, handler = server()
    bodies = [f'{{"image": {i}}}'.encode() for i in range(5)]
    result = loadgen.run(url, bodies, {"Content-Type": "application/json"}, 1, 1)
    assert result["requests"] >= 10 and result["errors"] == 0 and result["non_2xx"] == 0
    assert set(handler.bodies) == set(bodies)  # one body would leave four unseen
    counts = [handler.bodies.count(b) for b in bodies]
    assert max(counts) - min(counts) <= 1, counts  # in turn: each as often as the others


def test_paced_sends_at_the_rate_and_answers_its_percentiles(server):
    url, handler = server()
    result = loadgen.paced(url, [b"a", b"b"], {}, rate_per_s=200, seconds=1.0, connections=4)
    assert result["requests"] == 200 and result["not_200"] == 0 and len(handler.bodies) == 200
    assert set(handler.bodies) == {b"a", b"b"}
    assert 0 < result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] < 200


def test_paced_counts_the_wait_of_a_server_that_falls_behind(server):
    # 30 ms per request on one connection serves 33 requests a second; 60 arrive each second, so the queue grows and
    # the last requests wait for hundreds of milliseconds. A closed loop would report 30 ms for every one of them.
    url, _ = server(delay_s=0.03)
    result = loadgen.paced(url, [b"x"], {}, rate_per_s=60, seconds=1.0, connections=1)
    assert result["requests"] == 60 and result["p99_ms"] > 500, result


def test_load_tests_only_target_this_machine():
    with pytest.raises(ValueError, match="127.0.0.1"):
        loadgen.paced("http://example.com/infer", [b"x"], {}, 10, 1)
