"""Request parsing and response building for the two standard protocols, as pure functions (no web framework here).

* TensorFlow Serving REST API: `{"instances": [...]}` (row format) or `{"inputs": ...}` (columnar format) in,
  `{"predictions": [...]}` or `{"outputs": [...]}` out, errors as `{"error": "..."}`.
* Open Inference Protocol (KServe v2): typed tensors `{"name", "shape", "datatype", "data"}`, including the binary tensor
  data extension (a JSON header of `Inference-Header-Content-Length` bytes, then raw little-endian tensor bytes).

Every malformed request becomes a RequestError with an HTTP status and a message that says what is wrong. Parsing is as
strict as the specifications: a tensor's values are JSON numbers (not numbers in quotes, not true/false), a v2 request's
`id` is a string, and the binary-data parameters are booleans. The values are checked on the parsed NumPy array (its
dtype), not by walking Python lists: the JSON path is the hot one (chapter 06 load-tests it).
"""

from __future__ import annotations

import math

import numpy as np
import orjson

from helpers.serving.backends import TensorSpec

BINARY_HEADER = "Inference-Header-Content-Length"
V2_DATATYPES = {"FP32": np.float32}  # what these models take; anything else is refused by name


class RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Document(dict):
    """A parsed request body, which remembers whether its text holds a `true` or `false` literal anywhere. Without one
    (nearly every request) no value can be a boolean, and the tensor check skips its exact, slower pass."""

    may_hold_booleans = True  # (a plain dict passed in by a caller is always checked exactly)


def parse_json(body: bytes) -> Document:
    if not body:
        raise RequestError(400, "empty request body: expected a JSON object")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise RequestError(400, f"malformed JSON ({error}); note that NaN and Infinity are not valid JSON") from None
    if not isinstance(parsed, dict):
        raise RequestError(400, f"expected a JSON object, got {type(parsed).__name__}")
    document = Document(parsed)
    document.may_hold_booleans = has_boolean_literal(body)
    return document


def has_boolean_literal(body: bytes) -> bool:
    """Whether the JSON text `body` may hold `true` or `false` (a false alarm, e.g. an id "true", only costs the exact
    pass). No JSON number holds a letter: the r of "true" and the l of "false" are found with memchr (~3 us for a
    32-image body, where `b"true" in body` scans at ~60 us), and only the few letters in keys and ids are looked at."""
    for letter, word, offset in ((b"r", b"true", 1), (b"l", b"false", 2)):
        at = body.find(letter)
        for _ in range(64):
            if at < 0:
                break
            if at >= offset and body.startswith(word, at - offset):
                return True
            at = body.find(letter, at + 1)
        else:  # a body full of these letters (strings): search for the word itself
            if word in body:
                return True
    return False


def shape_text(shape) -> str:
    return "[" + ", ".join("N" if d == -1 else str(d) for d in shape) + "]"


def check_batch(x: np.ndarray, spec: TensorSpec, max_batch_size: int) -> np.ndarray:
    """The checks every protocol shares: shape, batch size, finite values in [0, 1]."""
    if x.ndim == 0 or tuple(x.shape[1:]) != tuple(spec.shape[1:]):
        raise RequestError(400, f"input '{spec.name}' must have shape {shape_text(spec.shape)}, got {list(x.shape)}")
    if len(x) == 0:
        raise RequestError(400, "empty batch: send at least one instance")
    if len(x) > max_batch_size:
        raise RequestError(400, f"batch of {len(x)} instances exceeds this server's limit of {max_batch_size}")
    if not np.isfinite(x).all():
        raise RequestError(400, f"input '{spec.name}' contains NaN or infinity")
    if x.min() < 0.0 or x.max() > 1.0:
        raise RequestError(400, f"input '{spec.name}' has values outside [0, 1] (min {x.min():g}, max {x.max():g}): "
                                "send pixels scaled to [0, 1], i.e. divided by 255")
    return x


JSON_TYPES = {str: "a string", bytes: "a string", dict: "an object", list: "an array", bool: "a boolean", type(None): "null",
              int: "a number", float: "a number"}


def json_type(value) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def to_float_array(values, what: str, expected: str = "JSON numbers", may_hold_booleans: bool = True) -> np.ndarray:
    """`values` (parsed JSON) as float32, refused unless every value is a JSON number: the TF Serving REST API takes a
    JSON number for a float tensor, and the Open Inference Protocol's `data` holds values of the tensor's datatype.

    NumPy finds the type while it builds the array: strings give a str dtype, null and objects an object dtype,
    all-boolean data a bool dtype. Booleans mixed with numbers become numbers there (True -> 1.0), so when the body
    holds a true/false literal (`may_hold_booleans`) an exact pass looks at each value's Python type.
    """
    if isinstance(values, (str, bytes, dict, bool)) or values is None:
        raise RequestError(400, f"{what} must be an array of {expected}, got {json_type(values)}")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        raise RequestError(400, f"{what} must be a rectangular array of {expected} (found rows of different lengths)") from None
    kind = array.dtype.kind
    if kind not in "fiu":
        raise RequestError(400, f"{what} must hold {expected}, {not_numbers(array)}")
    if may_hold_booleans and holds_booleans(values):
        raise RequestError(400, f"{what} must hold {expected}, found true/false: a boolean is not a number in JSON")
    return array.astype(np.float32, copy=False)


def holds_booleans(values) -> bool:
    """Whether `values`, known to hold only numbers and booleans (their array has a number dtype), holds a boolean.
    Written back out as JSON (orjson: ~200 us for 32 images, a third of a Python-level walk), a number never has an r
    or an a, and true and false do (as NaN and infinity, written as null, do not)."""
    if isinstance(values, np.ndarray):
        return False  # a boolean array has a bool dtype, refused already
    try:
        text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)
    except (TypeError, orjson.JSONEncodeError):  # something orjson cannot write: look at every value
        return bool in set(map(type, np.asarray(values, dtype=object).reshape(-1).tolist()))
    return b"r" in text or b"a" in text


def not_numbers(array: np.ndarray) -> str:
    """What was found instead of numbers, from the dtype NumPy gave the values."""
    if array.dtype.kind == "b":
        return "found true/false: a boolean is not a number in JSON"
    if array.dtype.kind in "US":
        return 'found strings (a number in quotes, such as "0.5", is a string in JSON): send the numbers themselves'
    found = sorted({json_type(v) for v in array.reshape(-1).tolist() if not isinstance(v, (int, float)) or isinstance(v, bool)})
    if not found:  # only numbers, but integers too large for any integer type
        return "found an integer too large for the tensor's type"
    return f"found {' and '.join(found)}"


# --------------------------------------------------------------------------- TensorFlow Serving REST


def tfs_inputs(document: dict, spec: TensorSpec, max_batch_size: int) -> tuple[np.ndarray, str]:
    """(batch, "row" or "columnar") from a :predict request body."""
    if document.get("signature_name", "serving_default") not in ("", "serving_default"):
        raise RequestError(400, f"unknown signature_name {document['signature_name']!r}: this model has 'serving_default'")
    has_instances, has_inputs = "instances" in document, "inputs" in document
    if has_instances == has_inputs:
        raise RequestError(400, "a predict request needs exactly one of 'instances' (row format) or 'inputs' (columnar format)")
    if has_instances:
        instances = document["instances"]
        if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
            if any(set(i) != {spec.name} for i in instances):
                raise RequestError(400, f"each named instance must have exactly the input '{spec.name}'")
            instances = [i[spec.name] for i in instances]
        x = to_float_array(instances, "'instances'", tfs_expected(spec), getattr(document, "may_hold_booleans", True))
        return check_batch(x, spec, max_batch_size), "row"
    inputs = document["inputs"]
    if isinstance(inputs, dict):
        if set(inputs) != {spec.name}:
            raise RequestError(400, f"'inputs' must name exactly the input '{spec.name}', got {sorted(inputs)}")
        inputs = inputs[spec.name]
    x = to_float_array(inputs, "'inputs'", tfs_expected(spec), getattr(document, "may_hold_booleans", True))
    return check_batch(x, spec, max_batch_size), "columnar"


def tfs_expected(spec: TensorSpec) -> str:
    return f"JSON numbers (the input '{spec.name}' is float32)"


def tfs_response(outputs: np.ndarray, layout: str) -> bytes:
    key = "predictions" if layout == "row" else "outputs"
    return orjson.dumps({key: outputs}, option=orjson.OPT_SERIALIZE_NUMPY)


def explain_response(method: str, explanation) -> bytes:
    """:explain's answer: one entry per instance, its map in the instance's shape (helpers.serving.explainer)."""
    deltas = explanation.deltas
    entries = [{"target": int(t), "attributions": a, **({"delta": float(deltas[i])} if deltas is not None else {})}
               for i, (t, a) in enumerate(zip(explanation.targets, explanation.attributions))]
    return orjson.dumps({"method": method, "explanations": entries}, option=orjson.OPT_SERIALIZE_NUMPY)


def tfs_status(versions: dict, messages: dict | None = None) -> dict:
    """GET /v1/models/<model>: TF Serving's model_version_status list; `messages` (version -> text) replace the states'
    own errors (ModelRepository.reports: a refused config.json, the version policy)."""
    messages = messages or {}
    # TF Serving's states are START, LOADING, AVAILABLE, UNLOADING, END: a version that failed to load is END, with its
    # error in `status` (Triton's name for it, UNAVAILABLE, is what the v2 repository index reports)
    return {"model_version_status": [
        {"version": str(v), "state": "AVAILABLE" if s.state == "AVAILABLE" else "END",
         "status": {"error_code": "OK" if s.state == "AVAILABLE" else "UNKNOWN", "error_message": messages.get(v, s.error)}}
        for v, s in sorted(versions.items(), reverse=True)]}


def tfs_metadata(model: str, version: int, backend) -> dict:
    def tensor_info(spec):
        return {spec.name: {"dtype": "DT_FLOAT", "name": spec.name,
                            "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}}}

    return {"model_spec": {"name": model, "signature_name": "", "version": str(version)},
            "metadata": {"signature_def": {"@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap", "signature_def": {"serving_default": {
                "inputs": tensor_info(backend.input), "outputs": tensor_info(backend.output),
                "method_name": "tensorflow/serving/predict"}}}}}


# --------------------------------------------------------------------------- Open Inference Protocol (KServe v2)


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part) of a v2 request; without the header the whole body is JSON."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise RequestError(400, f"{BINARY_HEADER} must be an integer, got {header_length!r}") from None
    if not 0 < length <= len(body):
        raise RequestError(400, f"{BINARY_HEADER} is {length} but the body has {len(body)} bytes")
    return body[:length], body[length:]


def v2_inputs(document: dict, binary: bytes, spec: TensorSpec, max_batch_size: int) -> np.ndarray:
    v2_request_id(document)  # checked before inference, since the response echoes it
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise RequestError(400, f"'inputs' must be a list with exactly one tensor object, named '{spec.name}'")
    tensor = inputs[0]
    missing = [k for k in ("name", "shape", "datatype") if k not in tensor]
    if missing:
        raise RequestError(400, f"input tensor is missing {missing}")
    if tensor["name"] != spec.name:
        raise RequestError(400, f"unexpected inference input '{tensor['name']}': this model's input is '{spec.name}'")
    if not isinstance(tensor["datatype"], str) or tensor["datatype"] not in V2_DATATYPES:
        raise RequestError(400, f"input '{spec.name}' has datatype {tensor['datatype']!r}; this model takes {sorted(V2_DATATYPES)}")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(400, f"'shape' must be a list of non-negative integers, got {shape!r}")
    dtype = np.dtype(V2_DATATYPES[tensor["datatype"]]).newbyteorder("<")
    count = math.prod(shape)
    binary_size = parameters(tensor, "input").get("binary_data_size")
    if binary_size is not None and (not isinstance(binary_size, int) or isinstance(binary_size, bool)):
        raise RequestError(400, f"the input's binary_data_size must be an integer (a byte count), got {json_type(binary_size)}")
    if binary_size is not None:
        if binary_size != len(binary) or binary_size != count * dtype.itemsize:
            raise RequestError(400, f"binary_data_size is {binary_size}; the body carries {len(binary)} bytes after the JSON "
                                    f"and shape {shape} needs {count * dtype.itemsize}")
        if "data" in tensor:
            raise RequestError(400, "an input has either 'data' or binary_data_size, not both")
        values = np.frombuffer(binary, dtype=dtype).astype(np.float32)
    else:
        if binary:
            raise RequestError(400, "the body has binary data but no input declares binary_data_size")
        if "data" not in tensor:
            raise RequestError(400, f"input '{spec.name}' has no 'data'")
        data = tensor["data"]
        if not isinstance(data, list):  # the protocol: "a flat or nested array"
            raise RequestError(400, f"the 'data' of input '{spec.name}' must be a flat or nested array of FP32 values (JSON "
                                    f"numbers), got {json_type(data)}")
        values = to_float_array(data, f"the 'data' of input '{spec.name}'", "FP32 values (JSON numbers)",
                                getattr(document, "may_hold_booleans", True)).reshape(-1)
    if values.size != count:
        raise RequestError(400, f"'data' has {values.size} elements but shape {shape} needs {count}")
    return check_batch(values.reshape(shape), spec, max_batch_size)


def parameters(obj: dict, what: str) -> dict:
    value = obj.get("parameters") or {}
    if not isinstance(value, dict):
        raise RequestError(400, f"the {what}'s 'parameters' must be a JSON object")
    return value


def v2_request_id(document: dict) -> str | None:
    """The request's `id`, which the response echoes: the protocol makes it a string."""
    if "id" not in document:
        return None
    if not isinstance(document["id"], str):
        raise RequestError(400, f"the request 'id' must be a string, got {json_type(document['id'])}: send it in quotes, e.g. \"7\"")
    return document["id"]


def boolean(obj: dict, key: str, what: str, default: bool | None) -> bool | None:
    value = parameters(obj, what).get(key, default)
    if value is not None and not isinstance(value, bool):
        raise RequestError(400, f"the {what}'s '{key}' parameter must be true or false, got {json_type(value)}")
    return value


def v2_wants_binary(document: dict, output: TensorSpec) -> bool:
    """An output's own `binary_data` parameter wins; otherwise the request's `binary_data_output` decides."""
    default = boolean(document, "binary_data_output", "request", False)
    requested = document.get("outputs")
    if requested is None:
        return default
    if not isinstance(requested, list) or any(not isinstance(o, dict) or o.get("name") != output.name for o in requested):
        raise RequestError(400, f"'outputs' may only request '{output.name}'")
    choices = [boolean(o, "binary_data", "output", None) for o in requested]
    return next((c for c in choices if c is not None), default)


def v2_response(document: dict, model: str, version: int, output: TensorSpec, y: np.ndarray, binary: bool) -> tuple[bytes, dict]:
    """(body, extra headers) of an inference response, JSON or with the output as binary data after the JSON."""
    tensor = {"name": output.name, "datatype": "FP32", "shape": list(y.shape)}
    raw = b""
    if binary:
        raw = np.ascontiguousarray(y, dtype="<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = y.reshape(-1)
    response = {"model_name": model, "model_version": str(version), "outputs": [tensor]}
    if (request_id := v2_request_id(document)) is not None:
        response["id"] = request_id
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not binary:
        return header, {}
    return header + raw, {BINARY_HEADER: str(len(header))}


def v2_metadata(model: str, versions: list[int], backend) -> dict:
    def tensor(spec):
        return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}

    return {"name": model, "versions": [str(v) for v in versions], "platform": backend.platform,
            "inputs": [tensor(backend.input)], "outputs": [tensor(backend.output)]}
