"""A small client for both protocols (what a TF Serving or KServe/Triton client sends, written out plainly)."""

from __future__ import annotations

import time

import numpy as np
import orjson

from helpers.serving.protocols import BINARY_HEADER


class ServingClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 30.0, verify=True):
        """`verify`: how an https:// server's certificate is checked, as httpx takes it: True (the system's CAs), an
        ssl.SSLContext (`ssl.create_default_context(cafile=ca)`; RunningServer.verify), or False (never: anyone in
        the middle could answer)."""
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s, verify=verify)

    def close(self):
        self.http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def get(self, path: str) -> dict:
        response = self.http.get(path)
        response.raise_for_status()
        return response.json()

    def metrics(self, name: str) -> dict[tuple, float]:
        """The server's samples of the metric `name` from /metrics: {(label, value) pairs: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        answer = self.http.get("/metrics")
        answer.raise_for_status()
        return {tuple(sorted(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(answer.text) for sample in family.samples if sample.name == name}

    def wait_for_config(self, model: str, sha256: str | None, timeout_s: float = 30.0) -> dict:
        """The model's configuration in force, once the server has read the config.json whose sha256 is given (None:
        once it has seen the file deleted), from GET /v2/models/<model>/config. The server reads it on its next scan."""
        deadline = time.monotonic() + timeout_s
        while (config := self.get(f"/v2/models/{model}/config"))["sha256"] != sha256:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not apply {model}'s config.json within {timeout_s} s: it reports {config}")
            time.sleep(0.05)
        return config

    def predict(self, model: str, x: np.ndarray, version: int | None = None, columnar: bool = False) -> np.ndarray:
        """TF Serving REST :predict, row format (`instances`) or columnar (`inputs`)."""
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
        body = {"inputs" if columnar else "instances": x}
        response = self.http.post(path, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                                  headers={"Content-Type": "application/json"})
        response.raise_for_status()
        return np.asarray(response.json()["outputs" if columnar else "predictions"], np.float32)

    def explain(self, model: str, x: np.ndarray, method: str = "integrated_gradients", targets=None, steps: int = 32,
                version: int | None = None) -> dict:
        """:explain (chapter 13): {"method": ..., "attributions": array shaped like x, "targets": array, "deltas":
        array or None (Integrated Gradients' completeness gaps)}."""
        path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":explain"
        body = {"instances": x, "method": method, "steps": steps, **({"targets": list(map(int, targets))}
                                                                     if targets is not None else {})}
        response = self.http.post(path, content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                                  headers={"Content-Type": "application/json"})
        response.raise_for_status()
        answer = response.json()
        entries = answer["explanations"]
        deltas = [e["delta"] for e in entries] if entries and "delta" in entries[0] else None
        return {"method": answer["method"], "attributions": np.asarray([e["attributions"] for e in entries], np.float32),
                "targets": np.asarray([e["target"] for e in entries]),
                "deltas": None if deltas is None else np.asarray(deltas)}

    def infer(self, model: str, x: np.ndarray, input_name: str, version: int | None = None, binary: bool = False) -> dict:
        """Open Inference Protocol infer; `binary` sends the input and asks for the output as binary tensor data.
        Returns {"model_version": ..., "outputs": {name: array}}."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        body, headers = infer_request(x, input_name, binary)
        response = self.http.post(path, content=body, headers=headers)
        response.raise_for_status()
        return parse_infer_response(response.content, response.headers.get(BINARY_HEADER))


def infer_request(x: np.ndarray, input_name: str, binary: bool) -> tuple[bytes, dict]:
    x = np.ascontiguousarray(x, dtype="<f4")
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": "FP32"}
    if not binary:
        tensor["data"] = x.reshape(-1)
        return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY), {"Content-Type": "application/json"}
    raw = x.tobytes()
    tensor["parameters"] = {"binary_data_size": len(raw)}
    header = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    return header + raw, {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(header))}


def parse_infer_response(content: bytes, header_length: str | None) -> dict:
    header = orjson.loads(content[: int(header_length)] if header_length else content)
    binary, outputs = content[int(header_length):] if header_length else b"", {}
    for tensor in header["outputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            outputs[tensor["name"]] = np.frombuffer(binary[:size], "<f4").reshape(tensor["shape"])
            binary = binary[size:]
        else:
            outputs[tensor["name"]] = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
    return {"model_version": header["model_version"], "outputs": outputs}
