"""Per-model configuration: `<repository>/<model>/config.json`, beside the model's version folders.

Why a file per model: the server's Settings are one global choice, but models differ (a SavedModel gains from batching,
a small ONNX model loses to it) and so do their rollouts (keep two versions, label one "stable" and one "canary"). TF
Serving keeps this per model in its ModelServerConfig (`model_version_policy`, `version_labels`), Triton in each
model's config.pbtxt (`version_policy`, `dynamic_batching`); this file follows their names, in JSON like the manifests:

    {"batching": {"enabled": true, "max_batch_size": 16, "max_delay_ms": 5},
     "max_queue": 64,
     "version_policy": {"latest": {"num_versions": 2}},
     "version_labels": {"stable": 1, "canary": 2},
     "traffic_split": {"stable": 90, "canary": 10},
     "shadow": "candidate"}

Every key is optional. `batching` and `max_queue` override the global Settings for this model's versions (a missing
size keeps the global one). `version_policy` is one of {"latest": {"num_versions": N}} (the N highest version numbers
on disk), {"all": {}} or {"specific": {"versions": [1, 3]}}; versions outside it are not loaded. Without the file, or
without `version_policy`, every version is served ("all"): the course's chapters pin requests to version 1 while
version 2 exists. TF Serving and Triton would serve only the latest version by default.

`traffic_split` and `shadow` roll a new version out (chapter 11; helpers.serving.rollout). `traffic_split` shares the
requests that name no version among labels, in percent (numbers >= 0 adding up to 100), like KServe's canary traffic
percentage or Seldon Core's experiment weights: without it, they go to the latest available version. A client that
sends an `X-Routing-Key` header (a user id, a session) always lands on the same side for the same split (sticky
assignment); keep the labels in the same order from one split to the next, so that the users a growing label already
has keep it. `shadow` names a label
whose version receives a copy of each of those requests off the request path: its answers are compared with the
served ones and counted, never returned. Both name labels of `version_labels`.

The server reads the file on every repository scan and applies it when its content changes: a valid file replaces the
config in force, an invalid one is refused with every problem listed (ModelConfigError, naming the file and the fix)
and the config in force stays. Plain Python checks, as for the manifests (helpers.integrity.check_manifest).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from helpers.fixes import with_fix
from helpers.integrity import is_int, is_number

CONFIG = "config.json"
MAX_CONFIG_BYTES = 64 * 1024  # a config is a few lines: anything larger is not one
LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")  # path-safe, and never mistaken for a version number
POLICIES = ("latest", "all", "specific")


class ModelConfigError(ValueError):
    """A config.json that is not valid JSON or breaks the schema; its message lists every problem, then the fix."""

    def __str__(self) -> str:
        return with_fix(super().__str__(), "model-config")


@dataclass(frozen=True)
class CallSettings:
    """How a version's requests reach its runtime. In a ModelConfig, None means "the server's global setting";
    `effective` fills those in, giving what `Server.new_caller` builds the version's caller from."""

    batching: bool | None = None
    max_batch_size: int | None = None  # rows per runtime call (Settings.batch_max_size)
    max_delay_ms: float | None = None  # (Settings.batch_max_delay_ms)
    max_queue: int | None = None  # requests waiting per version; 0: no bound (Settings.max_queue)

    def effective(self, settings) -> CallSettings:
        """These overrides applied to the server's Settings (anything with their four fields)."""
        defaults = CallSettings(settings.batching, settings.batch_max_size, settings.batch_max_delay_ms, settings.max_queue)
        return CallSettings(**{f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(defaults, f.name)
                               for f in fields(self)})


@dataclass(frozen=True)
class VersionPolicy:
    kind: str = "all"  # one of POLICIES
    num_versions: int = 0  # for "latest"
    versions: frozenset[int] = frozenset()  # for "specific"

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest {self.num_versions}"
        return "all" if self.kind == "all" else f"specific {sorted(self.versions)}"


@dataclass(frozen=True)
class ModelConfig:
    """A model's parsed config.json (NO_CONFIG without one). `labels` maps a version label to its version number."""

    calls: CallSettings = CallSettings()
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)  # never modified after parsing
    path: str = ""  # the file it came from; "" for NO_CONFIG
    split: tuple[tuple[str, float], ...] = ()  # (label, percent) in the file's order; (): unpinned requests go to the latest
    shadow: str | None = None  # the label whose version gets a copy of each unpinned request


NO_CONFIG = ModelConfig()


def select_versions(policy: VersionPolicy, versions_on_disk) -> set[int]:
    """The versions on disk that `policy` serves (TF Serving's ServableVersionPolicy, Triton's version_policy)."""
    on_disk = set(versions_on_disk)
    if policy.kind == "latest":
        return set(sorted(on_disk)[-policy.num_versions:])
    if policy.kind == "specific":
        return on_disk & policy.versions
    return on_disk


# --------------------------------------------------------------------------- reading and checking

def parse_config(raw: bytes, path: Path | str) -> ModelConfig:
    """The ModelConfig in `raw` (the bytes of `path`), or ModelConfigError naming `path`, every problem and the fix."""
    def refused(problems: list[str]) -> ModelConfigError:
        return ModelConfigError(f"refusing {path}: {'; '.join(problems)}; the config in force before it stays in force")

    if len(raw) > MAX_CONFIG_BYTES:
        raise refused([f"it has {len(raw):,} bytes, more than a config's limit of {MAX_CONFIG_BYTES:,}"])
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError as error:
        raise refused([f"byte {error.start} is not UTF-8 text"]) from None
    except json.JSONDecodeError as error:
        raise refused([f"it is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"]) from None
    except ValueError as error:  # a key given twice (no_duplicates)
        raise refused([str(error)]) from None
    if problems := check_config(document):
        raise refused(problems)
    return config_from(document, str(path))


def no_duplicates(pairs: list[tuple]) -> dict:
    """json's object hook: a key given twice would silently keep the last one, so it is refused."""
    keys = [key for key, _ in pairs]
    if twice := sorted({key for key in keys if keys.count(key) > 1}):
        raise ValueError(f"key {twice[0]!r} is given twice in one object")
    return dict(pairs)


def check_config(document) -> list[str]:
    """Every way `document` breaks the config schema (see the module docstring); [] for a valid one."""
    if not isinstance(document, dict):
        return [f"it holds a JSON {type(document).__name__}, not an object"]
    known = ("batching", "max_queue", "version_policy", "version_labels", "traffic_split", "shadow")
    problems = [f"unknown key {key!r} (the keys are {', '.join(known)})" for key in document if key not in known]
    if "batching" in document:
        problems += check_batching(document["batching"])
    if "max_queue" in document and not is_int(document["max_queue"], 0):
        problems.append(f"'max_queue' must be a non-negative integer (0: no bound), got {document['max_queue']!r}")
    if "version_policy" in document:
        problems += check_policy(document["version_policy"])
    if "version_labels" in document:
        problems += check_labels(document["version_labels"], document.get("version_policy"))
    labels = document.get("version_labels") if isinstance(document.get("version_labels"), dict) else {}
    if "traffic_split" in document:
        problems += check_split(document["traffic_split"], labels)
    if "shadow" in document and not (isinstance(document["shadow"], str) and document["shadow"] in labels):
        problems.append(f"'shadow' must name a label of 'version_labels' ({', '.join(map(repr, labels)) or 'it has none'}), "
                        f"got {document['shadow']!r}")
    return problems


def check_batching(batching) -> list[str]:
    """{"enabled": bool, "max_batch_size": rows >= 1, "max_delay_ms": >= 0}, every key optional."""
    if not isinstance(batching, dict):
        return [f"'batching' must be an object like {{\"enabled\": true, \"max_batch_size\": 16, \"max_delay_ms\": 5}}, "
                f"got {batching!r}"]
    allowed = ("enabled", "max_batch_size", "max_delay_ms")
    problems = [f"'batching' has unknown key {key!r} (its keys are {', '.join(allowed)})" for key in batching if key not in allowed]
    if "enabled" in batching and not isinstance(batching["enabled"], bool):
        problems.append(f"'batching': 'enabled' must be true or false, got {batching['enabled']!r}")
    if "max_batch_size" in batching and not is_int(batching["max_batch_size"], 1):
        problems.append(f"'batching': 'max_batch_size' must be a positive integer (rows per runtime call), "
                        f"got {batching['max_batch_size']!r}")
    delay = batching.get("max_delay_ms", 0)
    if not (is_number(delay) and delay >= 0):
        problems.append(f"'batching': 'max_delay_ms' must be a number of milliseconds >= 0, got {delay!r}")
    return problems


def check_policy(policy) -> list[str]:
    """Exactly one of {"latest": {"num_versions": N >= 1}}, {"all": {}}, {"specific": {"versions": [v, ...]}}."""
    shapes = '{"latest": {"num_versions": 2}}, {"all": {}} or {"specific": {"versions": [1, 3]}}'
    if not isinstance(policy, dict) or len(policy) != 1 or next(iter(policy)) not in POLICIES:
        named = f" (it names {', '.join(map(repr, policy))})" if isinstance(policy, dict) and policy else ""
        return [f"'version_policy' must be exactly one of {shapes}{named}"]
    (kind, body), = policy.items()
    expected = {"latest": {"num_versions"}, "all": set(), "specific": {"versions"}}[kind]
    if not isinstance(body, dict) or set(body) != expected:
        return [f"'version_policy': {kind!r} must be an object with {'exactly ' + repr(*expected) if expected else 'no keys'}, "
                f"as in {shapes}; got {body!r}"]
    if kind == "latest" and not is_int(body["num_versions"], 1):
        return [f"'version_policy': 'num_versions' must be a positive integer, got {body['num_versions']!r}"]
    versions = body.get("versions", [1])
    if kind == "specific" and not (isinstance(versions, list) and versions and all(is_int(v, 1) for v in versions)
                                   and len(set(versions)) == len(versions)):
        return [f"'version_policy': 'versions' must be a non-empty list of distinct positive integers, got {versions!r}"]
    return []


def check_labels(labels, policy) -> list[str]:
    """{label: version}: labels like "stable" (letters, digits, _ and -, not starting with a digit), positive versions;
    with a "specific" policy, a label must name one of its versions (no other version is ever loaded)."""
    if not isinstance(labels, dict):
        return [f"'version_labels' must be an object like {{\"stable\": 1, \"canary\": 2}}, got {labels!r}"]
    problems = []
    for label, version in labels.items():
        if not LABEL.match(label):
            problems.append(f"'version_labels': label {label!r} must be letters, digits, '_' and '-' (at most 64, not "
                            "starting with a digit)")
        if not is_int(version, 1):
            problems.append(f"'version_labels': label {label!r} must name a version number (a positive integer), got {version!r}")
    specific = policy.get("specific") if isinstance(policy, dict) else None
    if isinstance(specific, dict) and isinstance(specific.get("versions"), list):
        problems += [f"'version_labels': label {label!r} names version {version}, which the 'specific' policy does not serve"
                     for label, version in labels.items() if is_int(version, 1) and version not in specific["versions"]]
    return problems


def check_split(split, labels: dict) -> list[str]:
    """{label: percent}: labels of 'version_labels', percents >= 0 adding up to 100 (within rounding)."""
    if not isinstance(split, dict) or not split:
        return [f"'traffic_split' must be an object like {{\"stable\": 90, \"canary\": 10}}, got {split!r}"]
    problems = [f"'traffic_split': {label!r} is not a label of 'version_labels' ({', '.join(map(repr, labels)) or 'none'})"
                for label in split if label not in labels]
    problems += [f"'traffic_split': {label!r} must be a percentage >= 0, got {share!r}"
                 for label, share in split.items() if not (is_number(share) and share >= 0)]
    if not problems and abs(sum(split.values()) - 100) > 1e-6:
        problems.append(f"'traffic_split': the percentages must add up to 100, they add up to {sum(split.values()):g}")
    return problems


def config_from(document: dict, path: str) -> ModelConfig:
    """A checked document (check_config found no problem) as a ModelConfig."""
    batching = document.get("batching", {})
    calls = CallSettings(batching.get("enabled"), batching.get("max_batch_size"), batching.get("max_delay_ms"),
                         document.get("max_queue"))
    (kind, body), = document.get("version_policy", {"all": {}}).items()
    policy = VersionPolicy(kind, body.get("num_versions", 0), frozenset(body.get("versions", ())))
    split = tuple((label, float(share)) for label, share in document.get("traffic_split", {}).items())
    return ModelConfig(calls, policy, dict(document.get("version_labels", {})), path, split, document.get("shadow"))
