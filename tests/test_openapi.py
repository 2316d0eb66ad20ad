"""The server's OpenAPI document (helpers/serving/openapi.py) against the server itself, in process (httpx's ASGI
transport, a fake backend put into the repository by hand, as in test_server_stress.py): the document is a sound
OpenAPI 3.1 document; every route the server answers is documented and every documented operation is answered; every
example succeeds and its answer matches the documented schema; the errors and the API key are as documented; /docs is
Swagger UI reading /openapi.json, loading nothing but the server's own copy of its files, and says how to install them
where they are missing."""

import asyncio
import re

import httpx
import numpy as np
import orjson
import pytest
from jsonschema import Draft202012Validator
from starlette.routing import Match

from helpers import paths
from helpers.fixes import FIXES
from helpers.serving import client as serving_client
from helpers.serving import openapi
from helpers.serving.app import Settings, create_app
from helpers.serving.backends import Backend, TensorSpec
from helpers.serving.explainer import Explanation
from helpers.serving.model_config import ModelConfig
from helpers.serving.protocols import BINARY_HEADER
from helpers.serving.repository import ModelVersions, VersionState

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
KEY = "sesame"


class FakeBackend(Backend):
    """Takes what chapter 06's MNIST model takes ("images", N x 28 x 28 x 1) and answers ten numbers per image."""

    platform = "fake"
    input = TensorSpec("images", (-1, 28, 28, 1))
    output = TensorSpec("output_0", (-1, 10))
    model_bytes = b"an ONNX file"  # for the demo's model route

    def predict(self, x):
        return x.reshape(len(x), -1)[:, :10] * 2.0


class FakeExplainer:
    """What :explain calls: a map of each instance's own pixels, for its top class."""

    def explain(self, x, method, targets, steps):
        targets = np.asarray(targets if targets is not None else FakeBackend().predict(x).argmax(1))
        deltas = np.zeros(len(x)) if method == "integrated_gradients" else None
        return Explanation(x.copy(), targets, deltas)


FakeBackend.explainer = FakeExplainer()


@pytest.fixture
def serving(tmp_path):
    """serving(**settings): an app serving the fake as mnist version 1 (no files, no scan). Load and unload do nothing
    (the repository's own tests cover them): these tests care that the handler answers."""
    apps = []

    def make(**settings):
        app = create_app(Settings(repository=tmp_path, **settings))
        server = app.app.state.server
        states = {1: VersionState(1, "AVAILABLE", backend=FakeBackend())}
        server.repository.models = {"mnist": ModelVersions(states, ModelConfig(labels={"stable": 1}))}  # mnist:stable is 1
        server.repository.load = server.repository.unload = lambda model: None
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.app.state.server.pool.shutdown()


def client(app, **headers) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server", headers=headers)


def run(app, work, **headers):
    """`await work(http)` with a client of `app`."""
    async def go():
        async with client(app, **headers) as http:
            return await work(http)

    return asyncio.run(go())


def document(app) -> dict:
    return run(app, lambda http: http.get(openapi.OPENAPI_URL)).json()


def deref(doc: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        assert node["$ref"].startswith("#/"), node["$ref"]
        target = doc
        for part in node["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def operations(doc: dict):
    """(method, path template, operation) of every documented operation."""
    return [(method, path, op) for path, item in doc["paths"].items() for method, op in item.items() if method in METHODS]


def concrete(doc: dict, path: str, op: dict) -> str:
    """The path template filled with each path parameter's example."""
    examples = {p["name"]: p["example"] for p in map(lambda p: deref(doc, p), op.get("parameters", [])) if p["in"] == "path"}
    return re.sub(r"\{(\w+)\}", lambda m: examples[m[1]], path)


def example_bodies(doc: dict, op: dict) -> dict:
    """name -> example value of the operation's JSON request body."""
    media = op.get("requestBody", {}).get("content", {}).get("application/json", {})
    return {name: deref(doc, example)["value"] for name, example in media.get("examples", {}).items()}


def body_of(doc: dict, op: dict) -> bytes:
    bodies = example_bodies(doc, op)
    return orjson.dumps(next(iter(bodies.values()))) if bodies else b""


def validator(doc: dict, schema: dict) -> Draft202012Validator:
    """A validator for `schema` whose "#/components/..." references resolve in `doc`."""
    return Draft202012Validator({**schema, "components": doc["components"]})


def check_answer(doc: dict, op: dict, answer: httpx.Response) -> None:
    """The answer's status is documented for the operation, and its body matches the documented schema."""
    assert str(answer.status_code) in op["responses"], (op["operationId"], answer.status_code, answer.text[:300])
    documented = deref(doc, op["responses"][str(answer.status_code)])
    if "content" not in documented:
        return
    media = answer.headers["content-type"].split(";")[0]
    assert media in documented["content"], (op["operationId"], media)
    if media == "application/json":
        validator(doc, documented["content"][media]["schema"]).validate(answer.json())
    elif media == "application/octet-stream" and BINARY_HEADER in answer.headers:  # v2 binary outputs: JSON, then bytes
        header = answer.content[:int(answer.headers[BINARY_HEADER])]
        validator(doc, documented["content"]["application/json"]["schema"]).validate(orjson.loads(header))


def unserved_here(path: str, answer: httpx.Response) -> bool:
    """A documented route this tree cannot answer 2xx: Swagger UI's files where npm did not install them (their
    documented 404)."""
    return (path in (openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL) and not openapi.swagger_ui_installed()
            and answer.status_code == 404)


def table(app) -> list:
    """The routes the server answers, as create_app built them: the fast routes, then the FastAPI app's."""
    return [*app.routes, *app.app.router.routes]


def matches(route, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method.upper(), "path": path, "root_path": ""}
    return route.matches(scope)[0] is Match.FULL


# --------------------------------------------------------------------------- (1) a sound OpenAPI 3.1 document


def test_the_document_is_sound_openapi_3_1(serving):
    doc = document(serving(demo=True))
    assert doc["openapi"].startswith("3.1.") and doc["info"]["title"] and doc["info"]["version"]
    # every reference resolves, and every schema is a valid JSON Schema (OpenAPI 3.1's dialect is 2020-12)
    refs = []

    def walk(node):
        if isinstance(node, dict):
            refs.extend([node["$ref"]] if "$ref" in node else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert refs
    for target in refs:
        deref(doc, {"$ref": target})
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    tags, ids = {t["name"] for t in doc["tags"]}, []
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert path.startswith("/"), where
        ids.append(op["operationId"])
        assert set(op["tags"]) <= tags and op["summary"], where
        assert op["responses"] and all("description" in deref(doc, r) for r in op["responses"].values()), where
        params = [deref(doc, p) for p in op.get("parameters", [])]
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == set(re.findall(r"\{(\w+)\}", path)), where  # each template name is a parameter, and back
        assert all(p["required"] for p in params if p["in"] == "path"), where
        for requirement in op.get("security", []):
            assert set(requirement) <= set(doc["components"]["securitySchemes"]), where
        for media in op.get("requestBody", {}).get("content", {}).values():
            Draft202012Validator.check_schema(media["schema"])
        for value in example_bodies(doc, op).values():  # the examples are what the schema describes
            validator(doc, op["requestBody"]["content"]["application/json"]["schema"]).validate(value)
    assert len(ids) == len(set(ids)), "operationIds must be unique"


# --------------------------------------------------------------------------- (2) the document covers the server


V1_PATHS = [f"mnist{at}{verb}" for at in ("", "/versions/1", "/labels/stable")
            for verb in ("", "/metadata", ":predict", ":explain", ":classify", ":regress")]  # TF Serving's REST paths
FILL = {"model": ["mnist"], "version": ["1"], "label": ["stable"], "action": ["load", "unload", "reload"],
        "path": V1_PATHS, "name": ["index.html", "demo.js", "ort.min.js"]}


def candidates(route) -> list[str]:
    """Concrete paths a route's template can take, from FILL (its {path:path} from TF Serving's REST paths)."""
    paths = [route.path]
    for name in re.findall(r"\{(\w+)(?::\w+)?\}", route.path):
        paths = [re.sub(r"\{" + name + r"(?::\w+)?\}", value, p) for p in paths for value in FILL[name]]
    return paths


def documented_regex(doc: dict) -> list[tuple[str, re.Pattern]]:
    """(method, regex of the path template) of every documented operation; a parameter never spans / or :."""
    return [(method, re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/:]+", re.escape(path)) + "$"))
            for method, path, _ in operations(doc)]


def uncovered(app, doc: dict) -> list[str]:
    """What the document and the server disagree on, both ways. Route by route: every route of the table matches a
    documented path, and every documented path is routed. Then request by request, since one route can serve several
    endpoints (TF Serving's /v1/models/{path:path}): every documented operation, sent its example with a known model,
    is answered 2xx by its handler, and every candidate request the server answers 2xx is documented."""
    problems = []
    documented = [(method, concrete(doc, path, op)) for method, path, op in operations(doc)]
    for route in table(app):
        for method in route.methods - {"HEAD"}:
            if not any(m == method.lower() and matches(route, m, p) for m, p in documented):
                problems.append(f"route {method} {route.path} is not in the document")
    for method, path in documented:
        if not any(matches(route, method, path) for route in table(app)):
            problems.append(f"{method.upper()} {path} is documented but no route serves it")
    regexes = documented_regex(doc)
    bodies = {"infer": body_of(doc, doc["paths"]["/v2/models/{model}/infer"]["post"]),
              "predict": body_of(doc, doc["paths"]["/v1/models/{model}:predict"]["post"]),
              "explain": body_of(doc, doc["paths"]["/v1/models/{model}:explain"]["post"])}

    async def probe(http):
        for method, path, op in operations(doc):
            answer = await http.request(method, concrete(doc, path, op), content=body_of(doc, op))
            if unserved_here(path, answer):
                continue
            if not answer.is_success:
                problems.append(f"{method.upper()} {path}: documented, answered {answer.status_code} {answer.text[:120]}")
            else:
                check_answer(doc, op, answer)
        for route in table(app):
            for method in route.methods - {"HEAD"}:
                for path in candidates(route):
                    body = next((b for verb, b in bodies.items() if path.endswith(verb)), b"{}")
                    answer = await http.request(method, path, content=body if method == "POST" else None)
                    if answer.is_success and not any(m == method.lower() and r.match(path) for m, r in regexes):
                        problems.append(f"{method} {path} is answered {answer.status_code} but not documented")

    run(app, probe)
    return problems


def test_every_route_the_server_answers_is_documented_and_every_documented_one_is_answered(serving):
    app = serving()
    assert uncovered(app, document(app)) == []


def test_the_demo_routes_are_documented_with_the_demo(serving):
    app = serving(demo=True)
    doc = document(app)
    assert "/demo/models/{model}/model.onnx" in doc["paths"]
    assert "/demo/" not in document(serving())["paths"]
    documented = [(method, concrete(doc, path, op)) for method, path, op in operations(doc)]
    for route in table(app):  # route by route only: the demo's files are not in a test's tree
        assert any(matches(route, m, p) for m, p in documented), route.path
    for method, path in documented:
        assert any(matches(route, method, path) for route in table(app)), path


@pytest.mark.parametrize("left_out", ["/metrics", "/v1/models/{model}/metadata", "/v2/repository/models/{model}/unload",
                                      "/v1/models/{model}/versions/{version}:predict"])
def test_the_coverage_check_finds_a_route_left_out_of_the_document(serving, left_out):
    app = serving()
    doc = document(app)
    del doc["paths"][left_out]
    assert any("not in the document" in p or "not documented" in p for p in uncovered(app, doc))


def test_the_coverage_check_finds_a_documented_route_the_server_does_not_answer(serving):
    app = serving()
    doc = document(app)
    doc["paths"]["/v2/models/{model}/explain"] = {"post": doc["paths"]["/v2/models/{model}/infer"]["post"]}
    doc["paths"]["/v1/models/{model}:classify"] = {"post": doc["paths"]["/v1/models/{model}:predict"]["post"]}
    problems = uncovered(app, doc)
    assert any("/explain" in p for p in problems) and any(":classify: documented, answered 400" in p for p in problems)


def test_the_label_routes_are_the_documented_label_paths(serving):
    doc = document(serving())
    assert [p for p in doc["paths"] if "/labels/" in p] == list(openapi.LABEL_PATHS)


# --------------------------------------------------------------------------- (3) the examples work


def test_every_example_succeeds_and_its_answer_matches_the_documented_schema(serving):
    app = serving()
    doc = document(serving())
    tried = []

    async def work(http):
        for method, path, op in operations(doc):
            for name, value in example_bodies(doc, op).items():
                answer = await http.request(method, concrete(doc, path, op), json=value)
                assert answer.status_code == 200, (path, name, answer.text[:300])
                check_answer(doc, op, answer)
                tried.append((path, name, answer.headers["content-type"]))
        # the binary tensor extension, as the course's client sends it
        op = doc["paths"]["/v2/models/{model}/infer"]["post"]
        content, headers = serving_client.infer_request(np.zeros((2, 28, 28, 1), np.float32), "images", binary=True)
        assert BINARY_HEADER in {p.get("name") for p in op["parameters"]} and "application/octet-stream" in op["requestBody"]["content"]
        answer = await http.post("/v2/models/mnist/infer", content=content, headers=headers)
        assert answer.status_code == 200, answer.text
        check_answer(doc, op, answer)

    run(app, work)
    inference = [(m, p) for m, p, op in operations(doc) if p.endswith(("infer", ":predict")) and p not in openapi.LABEL_PATHS]
    assert len(inference) == 4 and all(example_bodies(doc, doc["paths"][p][m]) for m, p in inference)
    assert ("/v2/models/{model}/infer", "v2_binary_output", "application/octet-stream") in tried
    assert {name for _, name, _ in tried} >= {"v2_json", "tfs_rows", "tfs_columns"}


def test_the_errors_are_answered_as_documented(serving):
    app = serving(max_body_bytes=10_000, api_key=KEY)
    doc = document(app)
    statuses = []

    async def work(http):
        for method, path, op in operations(doc):
            if not example_bodies(doc, op):
                continue
            good, url = body_of(doc, op), concrete(doc, path, op)
            for content, headers, url_, status in [
                    (good, {}, url, 401),
                    (good, {"X-API-Key": KEY}, url.replace("mnist", "nope"), 404),
                    (b'{"instances": [', {"Authorization": f"Bearer {KEY}"}, url, 400),
                    (b" " * 20_000, {"X-API-Key": KEY}, url, 413)]:
                if path in openapi.LABEL_PATHS:
                    continue
                answer = await http.request(method, url_, content=content, headers=headers)
                assert answer.status_code == status, (url_, status, answer.text[:200])
                check_answer(doc, op, answer)
                statuses.append(status)
        answer = await http.post("/v2/models/mnist/infer", json={"inputs": []})
        assert answer.headers["www-authenticate"] == "Bearer"

    run(app, work)
    assert sorted(set(statuses)) == [400, 401, 404, 413]


def test_a_shed_request_is_answered_as_documented(serving):
    from helpers.serving.batching import QueueFull

    app = serving()
    doc = document(app)
    server = app.app.state.server

    async def refuse(model, state, x):
        raise QueueFull("256 waiting")

    server.call = refuse
    op = doc["paths"]["/v1/models/{model}:predict"]["post"]
    answer = run(app, lambda http: http.post("/v1/models/mnist:predict", content=body_of(doc, op)))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    check_answer(doc, op, answer)
    assert "Retry-After" in deref(doc, op["responses"]["503"])["headers"]


def test_a_rate_limited_request_is_answered_as_documented(serving):
    """With --rate-limit, both inference routes answer 429 with Retry-After once the client's bucket is empty, and 400
    for more rows than the bucket holds: both documented, on every inference path, with or without a limit."""
    app = serving(rate_limit=0.5, rate_burst=1)
    doc = document(app)
    assert "rate limit" in deref(doc, {"$ref": "#/components/responses/RateLimited"})["description"]
    inference = [(m, p, op) for m, p, op in operations(doc) if p.endswith(("/infer", ":predict"))]
    assert len(inference) == 5 and all("429" in op["responses"] for _, _, op in inference)
    assert all("429" in op["responses"] for m, p, op in operations(document(serving())) if p.endswith(("/infer", ":predict")))

    async def work(http):
        two_rows = {"instances": [openapi.IMAGE, openapi.IMAGE]}  # refused without a charge: the bucket stays full
        answers = [(doc["paths"]["/v1/models/{model}:predict"]["post"],
                    await http.post("/v1/models/mnist:predict", json=two_rows))]
        for path in ("/v2/models/mnist/infer", "/v1/models/mnist:predict"):  # one bucket: the client's address
            op = doc["paths"][path.replace("mnist", "{model}")]["post"]
            answers.append((op, await http.post(path, content=body_of(doc, op))))
        return answers

    (op1, too_many), (op2, first), (op3, second) = run(app, work)
    assert too_many.status_code == 400 and first.status_code == 200 and second.status_code == 429
    assert second.headers["retry-after"] == "2" and "rate limit" in second.json()["error"]  # 1 token at 0.5/s: 2 s
    assert "at most 1 per request" in too_many.json()["error"]
    for op, answer in ((op1, too_many), (op2, first), (op3, second)):
        check_answer(doc, op, answer)
    assert "Retry-After" in deref(doc, op3["responses"]["429"])["headers"]


# --------------------------------------------------------------------------- the API key, where documented


def test_the_key_is_asked_exactly_where_the_document_says(serving):
    app = serving(api_key=KEY)
    doc = document(app)  # open, as /docs is: see the module docstring of openapi.py
    assert doc["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    secured = [p for m, p, op in operations(doc) if op.get("security")]
    assert "/v2/models/{model}/infer" in secured and "/v2/health/ready" not in secured and "/metrics" not in secured

    async def work(http):
        for method, path, op in operations(doc):
            url, body = concrete(doc, path, op), body_of(doc, op)
            without = await http.request(method, url, content=body)
            assert (without.status_code == 401) == bool(op.get("security")), (path, without.status_code)
            for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}):
                answer = await http.request(method, url, content=body, headers=headers)
                assert answer.status_code != 401, (path, headers)

    run(app, work)


# --------------------------------------------------------------------------- (4) /docs


NOT_INSTALLED = f"swagger-ui-dist is not installed in web/node_modules: {FIXES['swagger-ui'].fix}"
ATTRIBUTE = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.I)


def links(page: str) -> list[str]:
    """Every src and href in the page: what the browser loads (and the links a reader can follow)."""
    return ATTRIBUTE.findall(page)


def local(url: str) -> bool:
    return not re.match(r"^(?:[a-z][a-z0-9+.-]*:)?//", url, re.I)  # no scheme://host, no //host: a path or data:


def test_docs_is_swagger_ui_reading_the_document_from_the_servers_own_files(serving):
    if not openapi.swagger_ui_installed():
        pytest.skip(NOT_INSTALLED)
    app = serving(api_key=KEY)

    async def work(http):
        page = await http.get(openapi.DOCS_URL)
        return page, await http.get(openapi.OPENAPI_URL), {url: await http.get(url) for url in links(page.text)
                                                           if url.startswith("/")}

    page, doc, assets = run(app, work)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text and f"url: '{openapi.OPENAPI_URL}'" in page.text
    assert doc.status_code == 200 and doc.headers["content-type"] == "application/json"
    assert not re.search(r"https?://", " ".join(links(page.text))) and all(map(local, links(page.text))), links(page.text)
    assert set(assets) == {openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL}  # and the favicon is data:, no request
    for url, media_type in zip((openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL), ("text/javascript", "text/css")):
        answer = assets[url]
        assert answer.status_code == 200 and answer.headers["content-type"].split(";")[0] == media_type, url
        assert answer.content == (paths.SWAGGER_UI / url.rsplit("/", 1)[1]).read_bytes()  # the package's file, as is
        check_answer(doc.json(), doc.json()["paths"][url]["get"], answer)
    # the CSS draws its icons from data: URLs, the script is the whole of Swagger UI: nothing else to fetch
    assert not re.search(r"url\(\s*(?!['\"]?data:)", assets[openapi.SWAGGER_CSS_URL].text)


def test_the_assets_are_the_two_files_and_nothing_else_of_the_package(serving):
    app = serving()
    others = [f"{openapi.ASSETS_URL}/{name}" for name in (
        "package.json", "index.html", "swagger-ui.js", "swagger-initializer.js", "swagger-ui-bundle.js.map",
        "%2e%2e%2fpackage.json", "..%2f..%2fpackage.json", "")] + [f"{openapi.SWAGGER_JS_URL}/x"]

    async def work(http):
        return {url: await http.get(url) for url in others}

    for url, answer in run(app, work).items():
        assert answer.status_code == 404 and "error" in answer.json(), url


def test_without_swagger_ui_docs_says_how_to_install_it(serving, monkeypatch, tmp_path):
    """Where npm was absent at setup: /docs answers a page with the fix and the document's link, never a CDN's files;
    the asset routes answer their documented 404 with the fix; the document still covers the server."""
    monkeypatch.setattr(paths, "SWAGGER_UI", tmp_path / "not-installed")
    assert not openapi.swagger_ui_installed()
    app = serving()
    doc = document(app)

    async def work(http):
        return await http.get(openapi.DOCS_URL), [await http.get(u) for u in (openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL)]

    page, assets = run(app, work)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Swagger UI is not installed" in page.text and "make setup" in page.text and "npm" in page.text
    assert "<script" not in page.text and "SwaggerUIBundle" not in page.text
    assert openapi.OPENAPI_URL in links(page.text) and all(map(local, links(page.text))), links(page.text)
    check_answer(doc, doc["paths"][openapi.DOCS_URL]["get"], page)
    for url, answer in zip((openapi.SWAGGER_JS_URL, openapi.SWAGGER_CSS_URL), assets):
        assert answer.status_code == 404 and FIXES["swagger-ui"].fix in answer.json()["error"], url
        check_answer(doc, doc["paths"][url]["get"], answer)
    assert uncovered(app, doc) == []
