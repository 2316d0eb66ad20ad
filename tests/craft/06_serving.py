"""Chapter 06: a minimal inference server (FastAPI, one ONNX Runtime session, the Open Inference Protocol's /infer and
health routes, input checks) written in the notebook, run as a process and checked against the course's server; and
the answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "minimal fastapi server": "helpers.serving.process.running_server",
}

# Exercise 1's answers each run the experiment (a SavedModel server, six short wrk runs): few of them, all cheap to write.
EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "batching never turned on": '''
delay_results = {}
if have_wrk:
    with running_server(repositories["savedmodel"], poll_interval_s=0.2, name="delay") as s:
        for delay in [0.5, 2, 10]:
            busy, lone = (loadgen.run(s.url + "/v2/models/mnist/infer", v2_json_body, v2_json_headers, n, load_seconds)
                          for n in (32, 1))
            delay_results[delay] = {"req/s at 32": busy["requests_per_s"], "p50 ms at 32": busy["p50_ms"],
                                    "req/s at 1": lone["requests_per_s"], "p50 ms at 1": lone["p50_ms"]}
delay_results = pd.DataFrame(delay_results).T
''',
            "latencies in seconds": '''
delay_results = {}
if have_wrk:
    with running_server(repositories["savedmodel"], poll_interval_s=0.2, name="delay") as s, ServingClient(s.url) as c:
        try:
            for delay in [0.5, 2, 10]:
                apply_config(c, repositories["savedmodel"], {"batching": {"enabled": True, "max_delay_ms": delay}})
                busy, lone = (loadgen.run(s.url + "/v2/models/mnist/infer", v2_json_body, v2_json_headers, n, load_seconds)
                              for n in (32, 1))
                delay_results[delay] = {"req/s at 32": busy["requests_per_s"], "p50 ms at 32": busy["p50_ms"] / 1000,
                                        "req/s at 1": lone["requests_per_s"], "p50 ms at 1": lone["p50_ms"] / 1000}
        finally:
            apply_config(c, repositories["savedmodel"], None)
delay_results = pd.DataFrame(delay_results).T
''',
        },
        "right": {
            "records, set_index, and a p99 column more": '''
records = []
if have_wrk:
    with running_server(repositories["savedmodel"], poll_interval_s=0.2, name="delay") as s, ServingClient(s.url) as c:
        try:
            for delay in (0.5, 2.0, 10.0):
                apply_config(c, repositories["savedmodel"], {"batching": {"enabled": True, "max_delay_ms": delay}})
                row = {"delay": delay}
                for n in (1, 32):
                    result = loadgen.run(s.url + "/v2/models/mnist/infer", v2_json_body, v2_json_headers, n, load_seconds)
                    row |= {f"req/s at {n}": result["requests_per_s"], f"p50 ms at {n}": result["p50_ms"],
                            f"p99 ms at {n}": result["p99_ms"]}
                records.append(row)
        finally:
            apply_config(c, repositories["savedmodel"], None)
delay_results = pd.DataFrame(records).set_index("delay") if records else pd.DataFrame()
''',
        }},
    2: {"kind": "experiment",
        "wrong": {
            "no limit given (the default, 4 MiB)": '''
big = orjson.dumps({"instances": x_test[:500]}, option=orjson.OPT_SERIALIZE_NUMPY)
small = orjson.dumps({"instances": x_test[:50]}, option=orjson.OPT_SERIALIZE_NUMPY)
with running_server(repositories["onnx"], name="limits") as s:
    big_status = httpx.post(f"{s.url}/v1/models/mnist:predict", content=big, headers=json_headers, timeout=30).status_code
    small_status = httpx.post(f"{s.url}/v1/models/mnist:predict", content=small, headers=json_headers, timeout=30).status_code
''',
            "the limit in kilobytes, 1_000": '''
big = orjson.dumps({"instances": x_test[:500]}, option=orjson.OPT_SERIALIZE_NUMPY)
small = orjson.dumps({"instances": x_test[:50]}, option=orjson.OPT_SERIALIZE_NUMPY)
with running_server(repositories["onnx"], max_body_bytes=1_000, name="limits") as s:
    big_status = httpx.post(f"{s.url}/v1/models/mnist:predict", content=big, headers=json_headers, timeout=30).status_code
    small_status = httpx.post(f"{s.url}/v1/models/mnist:predict", content=small, headers=json_headers, timeout=30).status_code
''',
        },
        "right": {
            "httpx's json= with Python lists": '''
with running_server(repositories["onnx"], max_body_bytes=1_000_000, name="limits") as s:
    big_status = httpx.post(f"{s.url}/v1/models/mnist:predict", json={"instances": x_test[:500].tolist()}, timeout=30).status_code
    small_status = httpx.post(f"{s.url}/v1/models/mnist:predict", json={"instances": x_test[:50].tolist()}, timeout=30).status_code
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "the key as a query parameter": '''
with running_server(repositories["onnx"], api_key="course-demo", name="auth") as s:
    without = httpx.post(f"{s.url}/v2/models/mnist/infer", content=v2_json_body, headers=v2_json_headers).status_code
    with_key = httpx.post(f"{s.url}/v2/models/mnist/infer?api_key=course-demo", content=v2_json_body,
                          headers=v2_json_headers).status_code
    health = httpx.get(f"{s.url}/v2/health/ready").status_code
codes = (without, with_key, health)
''',
            "the codes in another order": '''
with running_server(repositories["onnx"], api_key="course-demo", name="auth") as s:
    without = httpx.post(f"{s.url}/v2/models/mnist/infer", content=v2_json_body, headers=v2_json_headers).status_code
    with_key = httpx.post(f"{s.url}/v2/models/mnist/infer", content=v2_json_body,
                          headers={**v2_json_headers, "Authorization": "Bearer course-demo"}).status_code
    health = httpx.get(f"{s.url}/v2/health/ready").status_code
codes = (with_key, without, health)
''',
        },
        "right": {
            "ServingClient with api_key, and X-API-Key": '''
with running_server(repositories["onnx"], api_key="course-demo", name="auth") as s:
    with ServingClient(s.url) as anonymous, ServingClient(s.url, api_key="course-demo") as keyed:
        codes = (anonymous.http.post("/v2/models/mnist/infer", content=v2_json_body, headers=v2_json_headers).status_code,
                 keyed.http.post("/v2/models/mnist/infer", content=v2_json_body, headers=v2_json_headers).status_code,
                 anonymous.http.get("/v2/health/ready").status_code)
    assert httpx.post(f"{s.url}/v2/models/mnist/infer", content=v2_json_body,
                      headers={**v2_json_headers, "X-API-Key": "course-demo"}).status_code == 200
''',
        }},
    4: {"kind": "code",
        "wrong": {
            "the session's shapes as they are": '''
route = """
@app.get("/v2/models/mnist")
def metadata():
    return {"name": "mnist",
            "inputs": [{"name": t.name, "datatype": "FP32", "shape": t.shape} for t in session.get_inputs()],
            "outputs": [{"name": t.name, "datatype": "FP32", "shape": t.shape} for t in session.get_outputs()]}

"""
my_server_source = MINIMAL_SERVER.replace("uvicorn.run(app", route + "uvicorn.run(app")
''',
            "ONNX's type name as the datatype": '''
route = """
@app.get("/v2/models/mnist")
def metadata():
    def tensor(t):
        return {"name": t.name, "datatype": t.type, "shape": [d if isinstance(d, int) else -1 for d in t.shape]}
    return {"name": "mnist", "inputs": [tensor(t) for t in session.get_inputs()],
            "outputs": [tensor(t) for t in session.get_outputs()]}

"""
my_server_source = MINIMAL_SERVER.replace("uvicorn.run(app", route + "uvicorn.run(app")
''',
            "the route at /v2/models/mnist/metadata": '''
route = """
@app.get("/v2/models/mnist/metadata")
def metadata():
    def tensor(t):
        return {"name": t.name, "datatype": "FP32", "shape": [d if isinstance(d, int) else -1 for d in t.shape]}
    return {"name": "mnist", "inputs": [tensor(t) for t in session.get_inputs()],
            "outputs": [tensor(t) for t in session.get_outputs()]}

"""
my_server_source = MINIMAL_SERVER.replace("uvicorn.run(app", route + "uvicorn.run(app")
''',
        },
        "right": {
            "typed out, right after app = FastAPI()": '''
route = """
@app.get("/v2/models/mnist")
async def model_metadata():
    return {"name": "mnist", "versions": ["1"],
            "inputs": [{"name": "images", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
            "outputs": [{"name": "output_0", "datatype": "FP32", "shape": [-1, 10]}]}
"""
my_server_source = MINIMAL_SERVER.replace("app = FastAPI()\\n", "app = FastAPI()\\n" + route, 1)
''',
            "shapes through a helper, None and strings both -1": '''
lines = MINIMAL_SERVER.splitlines(keepends=True)
at = next(i for i, line in enumerate(lines) if line.startswith("uvicorn.run("))
route = [
    "def describe(t):\\n",
    "    dims = [-1 if d is None or isinstance(d, str) else int(d) for d in t.shape]\\n",
    "    return {'name': t.name, 'datatype': 'FP32', 'shape': dims}\\n",
    "\\n",
    "app.add_api_route('/v2/models/mnist', lambda: {'name': 'mnist', 'platform': 'onnxruntime_onnx',\\n",
    "                  'inputs': [describe(t) for t in session.get_inputs()],\\n",
    "                  'outputs': [describe(t) for t in session.get_outputs()]}, methods=['GET'])\\n",
    "\\n",
]
my_server_source = "".join(lines[:at] + route + lines[at:])
''',
        }},
}
