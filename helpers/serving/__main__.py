"""python -m helpers.serving --repository DIR [--port 8500] [--batching] [--workers N] ...: run the inference server on
uvicorn, in one process, or with --workers N in N worker processes under a supervisor (workers.py).

Chapter 12's defences, each off unless asked for: --trusted-key (serve only signed versions), --rate-limit and
--rate-burst (per API key, per instance), --top-class-only (no scores in answers), --tls-certfile and --tls-keyfile
(HTTPS), and --api-key-file with one key per client."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

API_KEY_ENV = "COURSE_SERVING_API_KEY"


def parse_args(argv=None):
    from helpers.serving.app import Settings
    from helpers.serving.connections import ConnectionLimits

    defaults = Settings(repository=Path("."))
    parser = argparse.ArgumentParser(prog="python -m helpers.serving", description="Run the course's inference server (TF Serving REST and KServe v2 APIs) on uvicorn.")
    parser.add_argument("--repository", type=Path, required=True, help="model repository: <repository>/<model>/<version>/")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else needs an API key)")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--api-key-file", type=Path,
                        help=f"file holding the API keys, one per line (blank lines and # comments ignored): each key "
                             f"is a client of its own, with its own rate limit (or set {API_KEY_ENV} to one key)")
    parser.add_argument("--trusted-key", type=Path, metavar="PUBLIC_PEM",
                        help="serve only versions signed by this public key (helpers.signing); any other version is "
                             "refused at load, and the versions serving keep serving")
    parser.add_argument("--rate-limit", type=non_negative(float), default=defaults.rate_limit, metavar="PER_S",
                        help="instances per second per API key (per client address without keys); a request beyond "
                             "it is answered 429 with Retry-After (default 0: no limit; per worker with --workers)")
    parser.add_argument("--rate-burst", type=positive(int), metavar="N",
                        help="instances a client may send at once before the rate applies (the bucket's size; default "
                             "ten seconds of --rate-limit); a request with more rows is refused with 400")
    parser.add_argument("--top-class-only", action="store_true",
                        help="answer a one-hot of the top class instead of the model's scores (same shape and dtype), "
                             "which teach a model-extraction attack far more")
    parser.add_argument("--tls-certfile", type=Path, help="serve HTTPS with this certificate (PEM; helpers.tls makes one)")
    parser.add_argument("--tls-keyfile", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--batching", action="store_true",
                        help="gather concurrent requests into one runtime call (without it, each request runs the model at "
                             "once: inline on the event loop if a call takes under --inline-below-us, else in a thread pool)")
    parser.add_argument("--batch-max-size", type=int, default=defaults.batch_max_size, help="rows per runtime call")
    parser.add_argument("--batch-max-delay-ms", type=float, default=defaults.batch_max_delay_ms,
                        help="longest wait for a batch to fill")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-batch-size", type=int, default=defaults.max_batch_size, help="instances per request")
    parser.add_argument("--max-explain-instances", type=positive(int), default=defaults.max_explain_instances,
                        help="instances per :explain request (each costs tens of predictions)")
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s)
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="requests waiting per model version; beyond it, 503 with Retry-After (0: no limit)")
    parser.add_argument("--inline-below-us", type=float, default=defaults.inline_below_us,
                        help="without batching, run a model on the event loop if a one-row call takes less than this")
    parser.add_argument("--poll-interval-s", type=float, default=defaults.poll_interval_s, help="repository scan interval")
    parser.add_argument("--drift-window", type=int, default=defaults.drift_window,
                        help="outputs per drift test, for versions shipping a drift reference (0: off)")
    parser.add_argument("--drift-alpha", type=float, default=defaults.drift_alpha,
                        help="flag a window as drifted when its p-value is below this")
    parser.add_argument("--demo", action="store_true", help="also serve the browser demo (web/) under /demo/")
    parser.add_argument("--metrics-access", choices=("auto", "open", "key"), default="auto",
                        help="who may read /metrics: open, or only with the API key (auto: open when bound to loopback, "
                             "else the key)")
    parser.add_argument("--max-connections", type=int, default=1000,
                        help="beyond this many, new connections get 503 (per worker with --workers)")
    limits = ConnectionLimits()
    parser.add_argument("--header-timeout-s", type=positive(float), default=limits.header_timeout_s,
                        help="close a connection whose request headers take longer than this (408 if the request began)")
    parser.add_argument("--body-timeout-s", type=positive(float), default=limits.body_timeout_s,
                        help="answer 408 and close when a request body pauses longer than this")
    parser.add_argument("--body-deadline-s", type=positive(float), default=limits.body_deadline_s,
                        help="answer 408 and close when a whole request body takes longer than this")
    parser.add_argument("--max-header-bytes", type=positive(int), default=limits.max_header_bytes,
                        help="answer 431 and close when a request's line and headers are larger than this")
    parser.add_argument("--max-connections-per-client", type=int, default=limits.max_per_client,
                        help="close at once a connection beyond this many open from one address (0: no limit; per "
                             "worker with --workers)")
    parser.add_argument("--workers", type=positive(int), default=1,
                        help="worker processes answering on the port, each with its own copy of the models; their "
                             "metrics are reported together (default 1: one process, no supervisor; see "
                             "helpers/serving/workers.py)")
    # set by the supervisor of --workers N for each worker it starts (workers.py), never by hand
    parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def positive(kind):
    """An argparse type: a number of `kind` above 0 (a limit of 0 s or 0 bytes would refuse every request)."""
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return value
    return parse


def non_negative(kind):
    """An argparse type: a number of `kind`, 0 or above (0: off)."""
    def parse(text: str):
        value = kind(text)
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"must be 0 or above, not {text}")
        return value
    return parse


def api_keys(args) -> tuple[str, ...]:
    """The keys the server accepts: --api-key-file's lines (a file holding one key, as before, is one line), else
    COURSE_SERVING_API_KEY; empty: none."""
    if args.api_key_file:
        lines = (line.strip() for line in args.api_key_file.read_text().splitlines())
        return tuple(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    key = os.environ.get(API_KEY_ENV, "").strip()
    return (key,) if key else ()


def refusal(args, key: str | None) -> str | None:
    """Why these flags cannot run a server (None: they can), in words that name the fix."""
    if not is_loopback(args.host) and key is None:
        return (f"refusing to bind {args.host} without an API key: anyone on the network could use the model. "
                f"Pass --api-key-file or set {API_KEY_ENV}, or bind 127.0.0.1.")
    if args.metrics_access == "key" and key is None:
        return "--metrics-access key needs an API key: pass --api-key-file or set " + API_KEY_ENV
    if not args.repository.is_dir():
        return f"no model repository at {args.repository}"
    if (args.tls_certfile is None) != (args.tls_keyfile is None):
        return "HTTPS needs both --tls-certfile and --tls-keyfile (helpers.tls.self_signed_certificate makes both)"
    for flag, path in (("--tls-certfile", args.tls_certfile), ("--tls-keyfile", args.tls_keyfile)):
        if path is not None and not path.is_file():
            return f"{flag}: no file at {path}"
    if args.rate_burst is not None and not args.rate_limit:
        return "--rate-burst needs --rate-limit (the rate at which the bucket refills, in instances per second)"
    if args.top_class_only and args.demo:
        return ("--top-class-only with --demo would hide nothing: the demo hands browsers the model file itself, which "
                "computes every score; serve one or the other")
    if args.trusted_key is not None:
        from helpers.signing import check_public_key

        try:
            check_public_key(args.trusted_key)
        except ValueError as error:
            return f"--trusted-key: {error}"
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def metrics_need_key(args, key: str | None) -> bool:
    """Open on loopback (only this machine can scrape it), behind the key when the server is reachable from the network:
    metrics name every model and version, which the model routes show only to a caller with the key."""
    if args.metrics_access == "auto":
        return key is not None and not is_loopback(args.host)
    return args.metrics_access == "key"


def http_protocol(args, app):
    """uvicorn's httptools protocol with the limits on slow and greedy clients (connections.py), counting the
    connections it closes in the server's own metrics. The server speaks no WebSocket (hence ws="none" above): the
    limits know only HTTP."""
    from helpers.serving.connections import ConnectionLimits, limited_protocol

    limits = ConnectionLimits(header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
                              body_deadline_s=args.body_deadline_s, max_header_bytes=args.max_header_bytes,
                              max_per_client=args.max_connections_per_client)
    return limited_protocol(limits, app.app.state.server.metrics.connections_closed)


def main(argv=None) -> int:
    import uvicorn

    from helpers.serving.app import Settings, create_app

    args = parse_args(argv)
    keys = api_keys(args)
    key = keys[0] if keys else None
    if problem := refusal(args, key):
        print(problem, file=sys.stderr)
        return 2
    worker = args.worker_index
    if args.workers > 1 and worker is None:
        from helpers.serving import workers

        return workers.supervise(args, sys.argv[1:] if argv is None else list(argv))
    name = "%(name)s" if worker is None else f"%(name)s[worker {worker}]"
    logging.basicConfig(level=args.log_level.upper(), format=f"%(asctime)s %(levelname)s {name}: %(message)s")
    settings = Settings(repository=args.repository, api_keys=keys, max_body_bytes=args.max_body_bytes,
                        max_batch_size=args.max_batch_size, request_timeout_s=args.request_timeout_s, batching=args.batching,
                        batch_max_size=args.batch_max_size, batch_max_delay_ms=args.batch_max_delay_ms,
                        poll_interval_s=args.poll_interval_s, drift_window=args.drift_window,
                        drift_alpha=args.drift_alpha, demo=args.demo, max_queue=args.max_queue,
                        inline_below_us=args.inline_below_us, metrics_need_key=metrics_need_key(args, key), worker=worker,
                        trusted_key=args.trusted_key, rate_limit=args.rate_limit, rate_burst=args.rate_burst,
                        top_class_only=args.top_class_only, max_explain_instances=args.max_explain_instances)
    app = create_app(settings)
    options = dict(log_level="warning", access_log=False, loop="uvloop", http=http_protocol(args, app), ws="none",
                   limit_concurrency=args.max_connections, **tls_options(args))
    if worker is not None:  # one of --workers N, on the socket its supervisor bound
        from helpers.serving import workers

        return workers.serve(app, options, args.listen_fd)
    uvicorn.run(app, host=args.host, port=args.port, **options)
    return 0


def tls_options(args) -> dict:
    """uvicorn's HTTPS settings (none: plain HTTP). With --workers N each worker reads the files itself: uvicorn wraps
    the shared socket's connections in TLS in every worker."""
    if args.tls_certfile is None:
        return {}
    return {"ssl_certfile": str(args.tls_certfile), "ssl_keyfile": str(args.tls_keyfile)}


if __name__ == "__main__":
    sys.exit(main())
