"""Chapter 10: Triton started by hand (its model repository, backend folder, libraries and command line written in the
notebook) and checked against the course's adapter; and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "triton by hand": "helpers.model_servers.triton.running",
}

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "lowest first": '''
def ranking(loads, connections):
    clean = loads[(loads.connections == connections) & (loads.errors == 0) & (loads.non_2xx == 0)]
    best = clean.sort_values("requests_per_s").drop_duplicates("server", keep="last")
    return best.sort_values("requests_per_s").set_index("server")[["protocol", "requests_per_s", "p99_ms"]]
''',
            "runs with errors kept": '''
def ranking(loads, connections):
    clean = loads[loads.connections == connections]
    best = clean.sort_values("requests_per_s", ascending=False).drop_duplicates("server")
    return best.set_index("server")[["protocol", "requests_per_s", "p99_ms"]]
''',
            "every connection count": '''
def ranking(loads, connections):
    clean = loads[(loads.errors == 0) & (loads.non_2xx == 0)]
    best = clean.sort_values("requests_per_s", ascending=False).drop_duplicates("server")
    return best.set_index("server")[["protocol", "requests_per_s", "p99_ms"]]
''',
            "the best p99, not the best throughput": '''
def ranking(loads, connections):
    clean = loads[(loads.connections == connections) & (loads.errors == 0) & (loads.non_2xx == 0)]
    best = clean.sort_values("p99_ms").drop_duplicates("server")
    return best.sort_values("requests_per_s", ascending=False).set_index("server")[["protocol", "requests_per_s", "p99_ms"]]
''',
        },
        "right": {
            "groupby and idxmax": '''
def ranking(loads, connections):
    ok = loads.query("connections == @connections and errors == 0 and non_2xx == 0")
    best = ok.loc[ok.groupby("server").requests_per_s.idxmax()]
    return best.set_index("server")[["protocol", "requests_per_s", "p99_ms"]].sort_values("requests_per_s", ascending=False)
''',
        }},
    2: {"kind": "experiment",
        "wrong": {
            "the gain upside down": '''
triton_batching, triton_batching_gain, images_per_execution_off = {}, None, None
if have_wrk and "Triton (model repository)" in runnable:
    triton_batching["on"] = next(r for r in load_rows if r["server"] == "Triton (model repository)"
                                 and r["protocol"] == "native" and r["connections"] == 32)
    with triton.running(onnx_dir, batching=False) as served:
        body, headers = served.encode(images[:1])
        triton_batching["off"] = measure.load_row(served, body, headers, 32, SECONDS)
        stats_off = triton.model_statistics(served)
    images_per_execution_off = stats_off["inference_count"] / stats_off["execution_count"]
    triton_batching_gain = triton_batching["off"]["requests_per_s"] / triton_batching["on"]["requests_per_s"]
''',
            "batching left on": '''
triton_batching, triton_batching_gain, images_per_execution_off = {}, None, None
if have_wrk and "Triton (model repository)" in runnable:
    triton_batching["on"] = next(r for r in load_rows if r["server"] == "Triton (model repository)"
                                 and r["protocol"] == "native" and r["connections"] == 32)
    with triton.running(onnx_dir) as served:
        body, headers = served.encode(images[:1])
        triton_batching["off"] = measure.load_row(served, body, headers, 32, SECONDS)
        stats_off = triton.model_statistics(served)
    images_per_execution_off = stats_off["inference_count"] / stats_off["execution_count"]
    triton_batching_gain = triton_batching["on"]["requests_per_s"] / triton_batching["off"]["requests_per_s"]
''',
        },
        "right": {
            "the row found with pandas, the ratio from the statistics' executions": '''
if have_wrk and "Triton (model repository)" in runnable:
    table = pd.DataFrame(load_rows)
    on = table[(table.server == "Triton (model repository)") & (table.protocol == "native") & (table.connections == 32)]
    with triton.running(onnx_dir, batching=False) as served:
        body, headers = served.encode(images[:1])
        off = measure.load_row(served, body, headers, 32, SECONDS)
        counts = triton.model_statistics(served)
    triton_batching = {"on": on.iloc[0].to_dict(), "off": off}
    triton_batching_gain = float(on.requests_per_s.iloc[0]) / off["requests_per_s"]
    images_per_execution_off = counts["inference_count"] / counts["execution_count"]
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "one worker again": '''
litserve_workers, litserve_best_workers = {}, None
if have_wrk and "LitServe" in runnable:
    litserve_workers[1] = next(r for r in load_rows if r["server"] == "LitServe" and r["protocol"] == "native" and r["connections"] == 32)
    with SERVERS["LitServe"].running(onnx_dir) as served:
        body, headers = served.encode(images[:1])
        litserve_workers[2] = measure.load_row(served, body, headers, 32, SECONDS)
    litserve_best_workers = max(litserve_workers, key=lambda n: litserve_workers[n]["requests_per_s"])
''',
            "the best row, not its count": '''
litserve_workers, litserve_best_workers = {}, None
if have_wrk and "LitServe" in runnable:
    litserve_workers[1] = next(r for r in load_rows if r["server"] == "LitServe" and r["protocol"] == "native" and r["connections"] == 32)
    with SERVERS["LitServe"].running(onnx_dir, workers=2) as served:
        body, headers = served.encode(images[:1])
        litserve_workers[2] = measure.load_row(served, body, headers, 32, SECONDS)
    litserve_best_workers = max(litserve_workers.values(), key=lambda row: row["requests_per_s"])
''',
        },
        "right": {
            "sorted by throughput": '''
litserve_workers = {}
if have_wrk and "LitServe" in runnable:
    litserve_workers[1] = [r for r in load_rows if (r["server"], r["protocol"], r["connections"]) == ("LitServe", "native", 32)][0]
    with SERVERS["LitServe"].running(onnx_dir, workers=2) as served:
        litserve_workers[2] = measure.load_row(served, *served.encode(images[:1]), connections=32, seconds=SECONDS)
    litserve_best_workers = sorted(litserve_workers, key=lambda n: litserve_workers[n]["requests_per_s"])[-1]
''',
        }},
}
