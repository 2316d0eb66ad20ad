"""Chapter 12's server defences: signed versions (helpers.signing, --trusted-key), rate limits per API key and per
instance (ratelimit.py, --rate-limit), answers without scores (--top-class-only) and HTTPS (helpers.tls). The signing
and token-bucket tests run in process; the rest start real servers on free 127.0.0.1 ports, one per scenario."""

import base64
import json
import shutil
import ssl
import threading
import time

import httpx
import numpy as np
import orjson
import pytest
from metrics_text import metric
from small_models import make_export, repository_of

from helpers import signing, tls
from helpers.integrity import read_manifest, write_manifest
from helpers.serving.__main__ import main as server_main
from helpers.serving.backends import load_backend
from helpers.serving.client import ServingClient, infer_request
from helpers.serving.process import running_server
from helpers.serving.ratelimit import RateLimiter, TokenBucket, client_label, retry_after
from helpers.serving.repository import publish

RNG = np.random.default_rng(12)
X = RNG.random((4, 1, 28, 28), dtype=np.float32)
V2_PATH, V1_PATH = "/v2/models/mnist/infer", "/v1/models/mnist:predict"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two exports of the same architecture (another seed: the "backdoored" weights), and two key pairs."""
    tmp = tmp_path_factory.mktemp("security")
    (v1, reference), (v2, reference_v2) = make_export(tmp, seed=1, x=X), make_export(tmp, seed=2, x=X)
    return {"v1": v1, "v2": v2, "reference": reference, "reference_v2": reference_v2, "tmp": tmp,
            "trusted": signing.generate_key_pair(tmp / "keys", "release"),
            "other": signing.generate_key_pair(tmp / "keys", "attacker")}


def copy_of(source, tmp_path, name: str, key=None):
    """A copy of the export `source` in tmp_path/name, signed with `key` (a KeyPair) if given."""
    folder = tmp_path / name
    shutil.copytree(source, folder)
    if key is not None:
        signing.sign_version(folder, key.private)
    return folder


def backdoored(exports, tmp_path, name: str):
    """A version signed with the trusted key, then its model.onnx swapped for other weights and its manifest rewritten
    to match: the sha256 manifest accepts it, only the signature tells."""
    folder = copy_of(exports["v1"], tmp_path, name, exports["trusted"])
    shutil.copy(exports["v2"] / "model.onnx", folder / "model.onnx")
    write_manifest(folder, **{k: v for k, v in read_manifest(folder).items() if k != "files"})
    return folder


def post_json(http, path, document, **headers):
    return http.post(path, content=orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
                     headers={"Content-Type": "application/json", **headers})


def v2_body(x):
    return {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1)}]}


def wait_for(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------- signing, in process


def test_keys_are_p256_pem_and_the_private_one_is_owner_only(exports):
    from cryptography.hazmat.primitives import serialization

    keys = exports["trusted"]
    assert keys.private.stat().st_mode & 0o777 == 0o600
    private = serialization.load_pem_private_key(keys.private.read_bytes(), None)
    assert private.curve.name == "secp256r1" and b"BEGIN PRIVATE KEY" in keys.private.read_bytes()  # PKCS#8
    assert keys.public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")  # SubjectPublicKeyInfo
    with pytest.raises(ValueError, match="not a readable PEM public key"):
        signing.check_public_key(keys.private)


def test_a_signed_version_verifies_and_still_loads(exports, tmp_path):
    folder = copy_of(exports["v1"], tmp_path, "1", exports["trusted"])
    assert (folder / signing.SIGNATURE).is_file()
    signing.verify_version(folder, exports["trusted"].public)
    load_backend(folder)  # the manifest leaves the signature out, as the signature leaves itself out
    write_manifest(folder, **{k: v for k, v in read_manifest(folder).items() if k != "files"})
    assert signing.SIGNATURE not in read_manifest(folder)["files"]  # a rewritten manifest does not list it either


@pytest.mark.parametrize("case, outcome, words", [
    ("unsigned", "missing", "has no signature"),
    ("other key", "wrong_key", "signed with another key"),
    ("backdoored", "invalid", "changed since it was signed"),  # model-signing names the first changed file it meets
    ("file added", "invalid", "extra.txt was added since it was signed"),
    ("signature edited", "invalid", "does not verify with the trusted key"),
    ("signature truncated", "invalid", "is not a model signature bundle"),
    ("key hint removed", "invalid", "names no signing key"),
])
def test_a_version_that_fails_its_signature_is_refused_with_the_reason_and_the_fix(exports, tmp_path, case, outcome,
                                                                                   words):
    trusted = exports["trusted"]
    if case == "backdoored":
        folder = backdoored(exports, tmp_path, "v")
    else:
        folder = copy_of(exports["v1"], tmp_path, "v", None if case == "unsigned" else
                         exports["other"] if case == "other key" else trusted)
    signature = folder / signing.SIGNATURE
    if case == "file added":
        (folder / "extra.txt").write_text("not signed")
    elif case == "signature edited":  # the signed statement now lists another digest for model.onnx
        bundle = json.loads(signature.read_text())
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        statement["predicate"]["resources"][0]["digest"] = "0" * 64
        bundle["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        signature.write_text(json.dumps(bundle))
    elif case == "signature truncated":
        signature.write_text(signature.read_text()[:200])
    elif case == "key hint removed":
        bundle = json.loads(signature.read_text())
        bundle["verificationMaterial"]["publicKey"]["hint"] = ""
        signature.write_text(json.dumps(bundle))
    with pytest.raises(signing.SignatureError) as caught:
        signing.verify_version(folder, trusted.public)
    text = str(caught.value)
    assert caught.value.outcome == outcome and words in text and str(folder) in text, text
    assert "Fix: " in text and "helpers.signing.sign_version(" in text, text
    if case == "backdoored":
        load_backend(folder)  # the manifest alone accepts it


# --------------------------------------------------------------------------- the token bucket, with a fake clock


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_refuses_exactly_when_it_is_empty():
    clock = FakeClock()
    bucket = TokenBucket(rate=5, burst=10, clock=clock)
    assert bucket.take(10) == 0.0  # admitted at exactly the burst
    assert bucket.take(1) == pytest.approx(0.2)  # refused at burst + 1: one token is 1/rate away
    assert bucket.take(1) == pytest.approx(0.2)  # a refusal costs nothing
    clock.now += 0.2 - 1e-6
    assert bucket.take(1) > 0  # not a moment before
    clock.now += 1e-6
    assert bucket.take(1) == 0.0  # admitted again after 1/rate s
    assert bucket.take(1) > 0
    clock.now += 1000
    assert bucket.take(11) == pytest.approx(0.2) and bucket.take(10) == 0.0  # refills to the burst, never beyond
    assert bucket.take(3) == pytest.approx(0.6) and retry_after(0.6) == 1 and retry_after(2.01) == 3


def test_each_client_has_its_own_bucket_and_address_buckets_are_bounded():
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_addresses=100)
    assert limiter.take("key-a", 2) == 0.0 and limiter.take("key-a", 1) > 0
    assert limiter.take("key-b", 2) == 0.0  # another key: a full bucket of its own
    for i in range(1000):  # a client changing address at every request
        limiter.take(f"address:10.0.{i // 256}.{i % 256}", 1)
    assert sum(name.startswith("address:") for name in limiter.buckets) <= 100
    assert limiter.take("key-a", 1) > 0  # the keys' buckets are never dropped
    assert client_label("sesame") == "key-" + __import__("hashlib").sha256(b"sesame").hexdigest()[:8]
    assert client_label(None) == "anonymous"


# --------------------------------------------------------------------------- servers


def test_only_versions_signed_by_the_trusted_key_are_ever_served(exports, tmp_path):
    """Hot reload under load: a signed v1 serves; v2 (unsigned), v3 (another key) and v4 (signed, then its model file
    swapped and its manifest rewritten) are refused at load, each with its reason, while every request is answered by
    v1; a properly signed v5 then takes over. A server without --trusted-key loads v4, backdoor and all."""
    trusted, root = exports["trusted"], tmp_path / "repository"
    publish(copy_of(exports["v1"], tmp_path, "signed-1", trusted), root, "mnist", 1)
    attempts = {2: (copy_of(exports["v2"], tmp_path, "unsigned"), "missing", "has no signature"),
                3: (copy_of(exports["v2"], tmp_path, "other-key", exports["other"]), "wrong_key", "another key"),
                4: (backdoored(exports, tmp_path, "backdoored"), "invalid", "changed since it was signed")}
    answers, stop = [], threading.Event()

    def hammer(url):
        body, headers = infer_request(X[:1], "images", binary=False)
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                answer = http.post(V2_PATH, content=body, headers=headers)
                answers.append((answer.status_code, answer.json().get("model_version")))

    with running_server(root, name="signed", trusted_key=trusted.public, poll_interval_s=0.1) as server, \
            ServingClient(server.url) as api:
        client = threading.Thread(target=hammer, args=(server.url,))
        client.start()
        try:
            for version, (folder, outcome, words) in attempts.items():
                publish(folder, root, "mnist", version)
                assert wait_for(lambda n=version: len(api.get("/v1/models/mnist")["model_version_status"]) == n)
                (status,) = api.get(f"/v1/models/mnist/versions/{version}")["model_version_status"]
                error = status["status"]["error_message"]
                assert status["state"] == "END" and "SignatureError" in error and words in error, status
                assert metric(api.http.get("/metrics").text, "model_signature_checks_total", outcome=outcome) == 1
                assert api.http.get(f"/v2/models/mnist/versions/{version}/ready").status_code == 400
                refused = post_json(api.http, f"/v2/models/mnist/versions/{version}/infer", v2_body(X))
                assert refused.status_code == 503 and words in refused.json()["error"]
            index = {row["version"]: row for row in api.http.post("/v2/repository/index").json()}
            assert index["1"]["state"] == "READY" and all(words in index[str(v)]["reason"]
                                                          for v, (_, _, words) in attempts.items())
            checks = {dict(k)["outcome"]: n for k, n in api.metrics("model_signature_checks_total").items()}
            assert checks == {"valid": 1, "missing": 1, "wrong_key": 1, "invalid": 1}, checks
            assert api.metrics("model_signature_verify_seconds_count")[(("model", "mnist"),)] == 4
            publish(copy_of(exports["v2"], tmp_path, "signed-5", trusted), root, "mnist", 5)
            assert wait_for(lambda: answers and answers[-1][1] == "5")
        finally:
            stop.set()
            client.join()
        answer = api.infer("mnist", X, "images")
        np.testing.assert_allclose(answer["outputs"]["logits"], exports["reference_v2"], atol=1e-4)
        seconds = api.metrics("model_signature_verify_seconds_sum")[(("model", "mnist"),)]
    served = [version for _, version in answers]
    assert {code for code, _ in answers} == {200} and len(answers) > 20, answers[:5]  # not one request failed
    assert set(served) == {"1", "5"} and served == sorted(served)  # never v2-v4; v1 until v5
    print(f"{len(answers)} requests during the hot reloads; 5 signature checks took {seconds * 1e3:.1f} ms in all")

    with running_server(root, name="unsigned-ok") as plain, ServingClient(plain.url) as api:
        statuses = {s["version"]: s["state"] for s in api.get("/v1/models/mnist")["model_version_status"]}
        assert statuses == dict.fromkeys("12345", "AVAILABLE")  # the manifest alone accepts the backdoored v4
        answer = api.infer("mnist", X, "images", version=4)
        np.testing.assert_allclose(answer["outputs"]["logits"], exports["reference_v2"], atol=1e-4)  # v2's weights
        assert not api.metrics("model_signature_checks_total")  # without a trusted key, nothing is checked


def test_the_rate_limit_is_per_key_and_per_instance_in_both_protocols(exports, tmp_path):
    keys = ["key-of-client-a", "key-of-client-b", "key-of-client-c"]
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# one key per client\n\n" + "\n".join(keys) + "\n")
    root = repository_of(exports["v1"], tmp_path)
    with running_server(root, name="rate-limited", api_key_file=key_file, rate_limit=1, rate_burst=10) as server, \
            httpx.Client(base_url=server.url, timeout=30) as http:
        one, eleven = X[:1], np.repeat(X[:1], 11, axis=0)

        def send(protocol, key, x):
            if protocol == "v2":
                return post_json(http, V2_PATH, v2_body(x), **{"X-API-Key": key})
            return post_json(http, V1_PATH, {"instances": x}, Authorization=f"Bearer {key}")

        for protocol, key in (("v2", keys[0]), ("tfserving", keys[1])):
            codes = [send(protocol, key, one).status_code for _ in range(10)]
            refused = send(protocol, key, one)
            assert codes == [200] * 10 and refused.status_code == 429, (protocol, codes, refused.text)
            assert refused.headers["retry-after"] == "1" and "rate limit" in refused.json()["error"]
            assert "1 instances per second" in refused.json()["error"]
        too_many = send("v2", keys[2], eleven)  # 11 rows under a burst of 10: it could never pass
        assert too_many.status_code == 400 and "at most 10 per request" in too_many.json()["error"]
        assert send("tfserving", keys[2], X).status_code == 200  # the third key has a budget of its own
        text = http.get("/metrics").text
        for key in keys[:2]:
            assert metric(text, "inference_rate_limited_total", model="mnist", client=client_label(key)) == 1
        assert not any(key in text for key in keys)  # the metrics name a key by its hash, never the key
        time.sleep(1.05)  # one token back at 1 per second (a slow rate, so that a stalled machine cannot refill the
        # bucket between the tenth request and the eleventh above)
        assert send("v2", keys[0], one).status_code == 200
        assert http.get("/v2/health/ready").status_code == 200


def test_top_class_only_answers_a_one_hot_of_the_top_class(exports, tmp_path):
    root = repository_of(exports["v1"], tmp_path)
    with running_server(root, name="full") as full, running_server(root, name="top-class", top_class_only=True) as top, \
            ServingClient(full.url) as full_client, ServingClient(top.url) as top_client:
        scores = full_client.infer("mnist", X, "images")["outputs"]["logits"]
        expected = np.eye(10, dtype=np.float32)[scores.argmax(1)]
        np.testing.assert_allclose(scores, exports["reference"], atol=1e-4)
        for binary in (False, True):
            answer = top_client.infer("mnist", X, "images", binary=binary)["outputs"]["logits"]
            assert answer.dtype == np.float32 and np.array_equal(answer, expected)
        np.testing.assert_array_equal(top_client.predict("mnist", X), expected)
        np.testing.assert_array_equal(top_client.predict("mnist", X, columnar=True), expected)
        counted = sum(top_client.metrics("inference_predictions_total").values())
        assert counted == 4 * len(X)  # counting by class still sees every answer


def test_https_with_a_certificate_the_client_verifies(exports, tmp_path):
    certificates = tls.self_signed_certificate(tmp_path / "tls")
    assert certificates.key.stat().st_mode & 0o777 == 0o600
    strict = ssl.create_default_context(cafile=str(certificates.ca))
    strict.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13's default context checks
    with running_server(repository_of(exports["v1"], tmp_path), name="https", tls=certificates) as server:
        assert server.url.startswith("https://127.0.0.1:")
        with ServingClient(server.url, verify=strict) as trusting:
            answer = trusting.infer("mnist", X, "images")
        np.testing.assert_allclose(answer["outputs"]["logits"], exports["reference"], atol=1e-4)
        with ServingClient(server.url, verify=server.verify) as trusting:
            assert trusting.get("/v2/health/ready") == {"ready": True}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), ServingClient(server.url) as untrusting:
            untrusting.infer("mnist", X, "images")
        with pytest.raises(httpx.RemoteProtocolError), httpx.Client(timeout=5) as plain:  # no plain HTTP beside it
            plain.get(server.url.replace("https://", "http://") + "/v2/health/ready")


@pytest.mark.parametrize("flags, words", [
    (["--tls-certfile", "cert.pem"], "needs both --tls-certfile and --tls-keyfile"),
    (["--top-class-only", "--demo"], "would hide nothing"),
    (["--rate-burst", "10"], "--rate-burst needs --rate-limit"),
    (["--trusted-key", "PRIVATE"], "not a readable PEM public key"),
])
def test_flags_that_cannot_work_stop_the_server_with_the_reason(exports, tmp_path, capsys, flags, words):
    flags = [str(exports["trusted"].private) if flag == "PRIVATE" else flag for flag in flags]
    assert server_main(["--repository", str(tmp_path), *flags]) == 2
    assert words in capsys.readouterr().err


def test_the_reason_names_the_changed_file_even_when_model_signings_message_escapes_its_quotes():
    # model_signing's message is str() of a list: a digest holding both quote characters makes Python escape them
    listed = ["Hash mismatch for 'manifest.json': Expected 'Digest(digest_value=b\"\\'x\")', Actual 'y'"]
    assert "\\'" in str(listed)
    assert signing.what_failed(ValueError("Signature mismatch: " + str(listed))) == "manifest.json changed since it was signed"
