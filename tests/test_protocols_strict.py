"""Request parsing as strict as the two specifications: a tensor's values are JSON numbers (the TF Serving REST API takes
a JSON number for a float tensor; the Open Inference Protocol's `data` holds values of the tensor's datatype), a v2
request's `id` is a string, and the binary-data parameters are booleans. Every refusal is a 400 that names the field
and the type it expected; every form the protocols allow is still accepted. Pure functions: no server started, except
in the last test, which checks that the refusals reach a client as 400s."""

import numpy as np
import orjson
import pytest

from helpers.serving import protocols
from helpers.serving.backends import TensorSpec
from helpers.serving.protocols import RequestError

SPEC, OUTPUT = TensorSpec("images", (-1, 1, 28, 28)), TensorSpec("logits", (-1, 10))
X = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)


def body(document) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def tfs(document):
    return protocols.tfs_inputs(protocols.parse_json(body(document)), SPEC, 256)


def v2(document, binary: bytes = b""):
    return protocols.v2_inputs(protocols.parse_json(body(document)), binary, SPEC, 256)


def v2_doc(data, shape=(2, 1, 28, 28), **extra):
    return {"inputs": [{"name": "images", "shape": list(shape), "datatype": "FP32", "data": data}], **extra}


def with_value(array: np.ndarray, value):
    """`array` as nested lists, one value replaced by `value` (a string, a boolean, null...)."""
    nested = array.tolist()
    inner = nested
    while isinstance(inner[0], list):
        inner = inner[-1]
    inner[-1] = value
    return nested


def refused(call, *args) -> str:
    with pytest.raises(RequestError) as info:
        call(*args)
    assert info.value.status == 400
    return info.value.message


# --------------------------------------------------------------------------- what the specifications allow, still accepted

ACCEPTED_TFS = {
    "row format, nested numbers": {"instances": X},
    "named instances": {"instances": [{"images": x} for x in X]},
    "columnar, named": {"inputs": {"images": X}},
    "columnar, bare": {"inputs": X},
    "integers are JSON numbers too": {"instances": np.zeros((2, 1, 28, 28), np.int64)},
    "explicit default signature": {"signature_name": "serving_default", "instances": X},
}


@pytest.mark.parametrize("what", ACCEPTED_TFS)
def test_every_tf_serving_form_the_api_allows_is_accepted(what):
    x, _ = tfs(ACCEPTED_TFS[what])
    assert x.dtype == np.float32 and x.shape == (2, 1, 28, 28)
    if what != "integers are JSON numbers too":
        np.testing.assert_array_equal(x, X)


ACCEPTED_V2 = {
    "flat data": v2_doc(X.reshape(-1)),
    "nested data": v2_doc(X),
    "integers": v2_doc([0] * (2 * 784 - 1) + [1]),
    "a string id": v2_doc(X.reshape(-1), id="req-7"),
    "an id that reads true (the exact boolean pass runs and finds none)": v2_doc(X.reshape(-1), id="true"),
    "binary output requested with true": v2_doc(X.reshape(-1), parameters={"binary_data_output": True}),
    "an output's binary_data false": v2_doc(X.reshape(-1), outputs=[{"name": "logits", "parameters": {"binary_data": False}}]),
}


@pytest.mark.parametrize("what", ACCEPTED_V2)
def test_every_v2_form_the_protocol_allows_is_accepted(what):
    document = protocols.parse_json(body(ACCEPTED_V2[what]))
    x = protocols.v2_inputs(document, b"", SPEC, 256)
    assert x.dtype == np.float32 and x.shape == (2, 1, 28, 28)
    wants_binary = protocols.v2_wants_binary(document, OUTPUT)
    assert wants_binary is (what == "binary output requested with true")
    response, _ = protocols.v2_response(document, "mnist", 1, OUTPUT, np.zeros((2, 10), np.float32), False)
    assert orjson.loads(response).get("id") == ACCEPTED_V2[what].get("id")


def test_binary_tensor_data_is_still_accepted():
    raw = np.ascontiguousarray(X, "<f4").tobytes()
    document = {"inputs": [{"name": "images", "shape": [2, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}}]}
    np.testing.assert_array_equal(v2(document, raw), X)


def test_a_plain_dict_not_from_parse_json_gets_the_exact_check():
    nested = with_value(X, True)
    with pytest.raises(RequestError, match="true/false"):
        protocols.tfs_inputs({"instances": nested}, SPEC, 256)
    x, _ = protocols.tfs_inputs({"instances": X.tolist()}, SPEC, 256)
    np.testing.assert_array_equal(x, X)


# --------------------------------------------------------------------------- what they do not allow, refused with why

def test_numbers_in_quotes_are_refused_in_both_protocols():
    strings = [[[[str(v) for v in row] for row in channel] for channel in image] for image in X.tolist()]
    for message in (refused(tfs, {"instances": strings}), refused(tfs, {"inputs": {"images": with_value(X, "0.5")}}),
                    refused(tfs, {"instances": [{"images": with_value(X[0], "0.5")}] * 2})):
        assert "JSON numbers" in message and "strings" in message and "float32" in message
    for data in ([str(v) for v in X.reshape(-1)], with_value(X, "0.5")):
        message = refused(v2, v2_doc(data))
        assert "'data' of input 'images'" in message and "FP32" in message and "strings" in message


def test_booleans_are_refused_as_pixels_alone_or_among_numbers():
    for document in ({"instances": np.ones((2, 1, 28, 28), bool).tolist()}, {"instances": with_value(X, True)},
                     {"inputs": {"images": with_value(X, False)}}, {"instances": True}):
        message = refused(tfs, document)
        assert "'instances'" in message or "'inputs'" in message
        assert "boolean" in message and "JSON numbers" in message
    for data in ([True] * (2 * 784), with_value(X, False), X.reshape(-1).tolist()[:-1] + [True]):
        message = refused(v2, v2_doc(data))
        assert "'data' of input 'images'" in message and "true/false" in message


def test_null_objects_and_non_arrays_are_refused_by_name():
    assert "null" in refused(tfs, {"instances": with_value(X, None)})
    assert "an object" in refused(v2, v2_doc(with_value(X, {"v": 0.5})))
    assert "got a number" in refused(v2, v2_doc(0.5, shape=(1,)))
    assert "got a string" in refused(v2, v2_doc("0.5"))
    assert "different lengths" in refused(tfs, {"instances": [[0.1, 0.2], [0.3]]})


@pytest.mark.parametrize("request_id", [{"nested": "object"}, 2**63, 7, 7.5, None, ["a"], True])
def test_a_v2_request_id_that_is_not_a_string_is_refused_not_echoed(request_id):
    document = v2_doc(X.reshape(-1), id=request_id)
    message = refused(v2, document)
    assert "'id' must be a string" in message
    with pytest.raises(RequestError):  # nor echoed by a caller that skipped v2_inputs
        protocols.v2_response(protocols.parse_json(body(document)), "mnist", 1, OUTPUT, np.zeros((2, 10), np.float32), False)


@pytest.mark.parametrize("parameters,outputs", [({"binary_data_output": "false"}, None), ({"binary_data_output": 1}, None),
                                                ({}, [{"name": "logits", "parameters": {"binary_data": "true"}}])])
def test_binary_data_parameters_must_be_booleans(parameters, outputs):
    document = protocols.parse_json(body(v2_doc(X.reshape(-1), parameters=parameters, **({"outputs": outputs} if outputs else {}))))
    message = refused(protocols.v2_wants_binary, document, OUTPUT)
    assert "must be true or false" in message and ("a string" in message or "a number" in message)


def test_binary_data_size_must_be_an_integer():
    raw = np.ascontiguousarray(X, "<f4").tobytes()
    document = {"inputs": [{"name": "images", "shape": [2, 1, 28, 28], "datatype": "FP32",
                            "parameters": {"binary_data_size": str(len(raw))}}]}
    assert "binary_data_size must be an integer" in refused(v2, document, raw)


# --------------------------------------------------------------------------- through a real server


@pytest.mark.integration  # starts a server on an exported model
def test_the_server_answers_each_lenient_form_with_a_400_that_says_why(tmp_path):
    import httpx
    from small_models import make_export, repository_of

    from helpers.serving.process import running_server

    directory, _ = make_export(tmp_path, seed=1, x=X)
    cases = [
        ("/v1/models/mnist:predict", {"instances": with_value(X, "0.5")}, "strings"),
        ("/v1/models/mnist:predict", {"instances": with_value(X, True)}, "true/false"),
        ("/v2/models/mnist/infer", v2_doc([str(v) for v in X.reshape(-1)]), "strings"),
        ("/v2/models/mnist/infer", v2_doc(X.reshape(-1), id={"nested": "object"}), "'id' must be a string"),
        ("/v2/models/mnist/infer", v2_doc(X.reshape(-1), id=2**63), "'id' must be a string"),
    ]
    with running_server(repository_of(directory, tmp_path)) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        for path, document, expected in cases:
            answer = http.post(path, content=body(document), headers={"Content-Type": "application/json"})
            assert answer.status_code == 400 and expected in answer.json()["error"], (path, answer.text)
            assert "id" not in answer.json()
        good = http.post("/v2/models/mnist/infer", content=body(v2_doc(X.reshape(-1), id="req-1")))
        assert good.status_code == 200 and good.json()["id"] == "req-1"


def test_the_fast_boolean_gates_agree_with_the_plain_searches():
    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b'trulfase "0.5,[]', np.uint8)
    for length in [*range(12), 40, 200, 1000]:
        for _ in range(300):
            text = rng.choice(alphabet, length).tobytes()
            assert protocols.has_boolean_literal(text) == (b"true" in text or b"false" in text), text
    assert not protocols.holds_booleans([[0.5, 1e-05], [2**63, -3]]) and not protocols.holds_booleans([float("inf"), float("nan")])
    assert protocols.holds_booleans([0.5, True]) and protocols.holds_booleans([[0.1], [False]]) and protocols.holds_booleans([np.zeros(2), True])
