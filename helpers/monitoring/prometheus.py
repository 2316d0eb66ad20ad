"""A real Prometheus for chapter 07, and reading the server's numbers with or without it. `running_prometheus(targets)`
writes a scrape configuration (with the course's alerting rules, `monitoring/alerts.yml` at the repository root),
starts the `prometheus` binary on a free 127.0.0.1 port with its data under `artifacts/prometheus/<port>/`, and stops
it when the block ends; `query`/`query_range` speak its HTTP API (PromQL), `wait_for_*` poll it until a scrape or a
value has arrived, and `alerts`/`record_alerts` read the alerting rules' state. Without Prometheus, `read_metrics` and
`metric` parse the server's own /metrics page: current values only, no history. `check_rules` runs `promtool` on a
rules file and its unit tests; `rule` reads one rule from a rules file.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from helpers import paths
from helpers.fixes import with_fix
from helpers.processes import free_port, running

RULES = paths.ROOT / "monitoring" / "alerts.yml"


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def check_rules(rules: Path, tests: Path | None = None, timeout_s: float = 120) -> str:
    """`promtool check rules` on `rules` and, given `tests`, `promtool test rules` on that unit-test file (run from its
    folder, where its `rule_files` are looked up). Returns promtool's output; raises ValueError quoting it when either
    fails, FileNotFoundError when promtool is not installed."""
    promtool = shutil.which("promtool")
    if promtool is None:
        raise FileNotFoundError(with_fix("promtool is not installed", "prometheus"))
    commands = [([promtool, "check", "rules", Path(rules).name], Path(rules).resolve().parent)]
    if tests is not None:
        commands.append(([promtool, "test", "rules", Path(tests).name], Path(tests).resolve().parent))
    outputs = []
    for command, folder in commands:
        result = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout_s)
        output = (result.stdout + result.stderr).strip()
        outputs.append(f"$ promtool {' '.join(command[1:])}\n{output}")
        if result.returncode != 0:
            raise ValueError(f"promtool {' '.join(command[1:])} failed (exit {result.returncode}):\n{output}")
    return "\n".join(outputs)


def rule(name: str, rules: Path = RULES) -> dict:
    """The alerting (or recording) rule called `name` in a rules file, as parsed YAML: expr, for, labels, ..."""
    import yaml

    groups = yaml.safe_load(Path(rules).read_text())["groups"]
    found = [r for g in groups for r in g["rules"] if name in (r.get("alert"), r.get("record"))]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rules called {name!r} in {rules}")
    return found[0]


def write_config(path: Path, targets: list[str], scrape_interval_s: float = 1.0, rules: Path | None = RULES) -> Path:
    """A minimal prometheus.yml: scrape `targets` (host:port) every `scrape_interval_s`, evaluate `rules` as often."""
    interval = f"{round(scrape_interval_s * 1000)}ms"  # Prometheus durations take integers: "1000ms", not "1.0s"
    lines = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}"]
    if rules is not None:
        lines += ["rule_files:", f"  - {Path(rules).resolve()}"]
    lines += ["scrape_configs:", "  - job_name: inference-server", "    static_configs:",
              "      - targets: [" + ", ".join(f"'{t}'" for t in targets) + "]"]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def running_prometheus(targets: list[str], scrape_interval_s: float = 1.0, rules: Path | None = RULES):
    """A real Prometheus scraping `targets`; yields its URL. Its data lives under artifacts/prometheus/<port>/."""
    if not prometheus_available():
        raise FileNotFoundError(with_fix("prometheus is not installed", "prometheus"))
    port = free_port()
    home = paths.artifacts() / "prometheus" / str(port)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = write_config(home / "prometheus.yml", targets, scrape_interval_s, rules)
    command = [shutil.which("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={home / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    try:
        with running(command, "/-/ready", "prometheus", port) as (url, _, _):
            yield url
    finally:
        shutil.rmtree(home, ignore_errors=True)  # its time series are only for this run


def api_result(url: str, endpoint: str, params: dict, timeout_s: float = 10):
    """The `data.result` of a Prometheus HTTP API answer, or a ValueError quoting Prometheus' own error."""
    import httpx

    answer = httpx.get(f"{url}/api/v1/{endpoint}", params=params, timeout=timeout_s).json()
    if answer["status"] != "success":
        raise ValueError(f"PromQL error for {params.get('query')!r}: {answer.get('error')}")
    return answer["data"]["result"]


def query(url: str, promql: str) -> list[dict]:
    """An instant query: [{"metric": labels, "value": float}, ...]."""
    return [{"metric": r["metric"], "value": float(r["value"][1])} for r in api_result(url, "query", {"query": promql})]


def query_range(url: str, promql: str, start: float, end: float, step_s: float = 1.0):
    """A range query as a DataFrame: one column per series (named by its labels), indexed by unix time."""
    import pandas as pd

    columns = {}
    for series in api_result(url, "query_range", {"query": promql, "start": start, "end": end, "step": step_s}, 30):
        name = ",".join(f"{k}={v}" for k, v in sorted(series["metric"].items())) or promql
        columns[name] = pd.Series({float(t): float(v) for t, v in series["values"]})
    return pd.DataFrame(columns)


def wait_for_first_scrape(url: str, timeout_s: float = 30.0) -> None:
    """Poll until Prometheus has scraped the server at least once (`up == 1`)."""
    wait_for_value(url, 'max(up{job="inference-server"})', 1, timeout_s)


def wait_for_value(url: str, promql: str, at_least: float, timeout_s: float = 30.0) -> float:
    """Poll an instant query until its first value reaches `at_least` (e.g. Prometheus has scraped the last window)."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = query(url, promql)
        if answer and answer[0]["value"] >= at_least:
            return answer[0]["value"]
        if time.monotonic() > deadline:
            raise TimeoutError(f"{promql} did not reach {at_least} within {timeout_s} s (last answer: {answer})")
        time.sleep(0.2)


def alerts(url: str) -> list[dict]:
    """Active alerts with their state ("pending" or "firing")."""
    import httpx

    return httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]


def record_alerts(url: str, seen: dict, **context) -> dict:
    """Note when each alert was first seen in each state: seen["DataDriftDetected firing"] = {"t": ..., **context}."""
    for alert in alerts(url):
        seen.setdefault(f"{alert['labels']['alertname']} {alert['state']}", {"t": time.time(), **context})
    return seen


# --------------------------------------------------------------------------- the server's own numbers, no Prometheus


def read_metrics(url: str) -> dict[tuple, float]:
    """The server's /metrics, parsed with prometheus_client: {(sample name, sorted labels): value}. The fallback when
    there is no Prometheus: the current values only, no history, no PromQL."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metric(values: dict[tuple, float], name: str, **labels) -> float | None:
    """One value from read_metrics' result, by name and labels (None if absent)."""
    return values.get((name, tuple(sorted(labels.items()))))
