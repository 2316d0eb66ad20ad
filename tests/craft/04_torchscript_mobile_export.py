"""Chapter 04: TorchScript and lite-interpreter saves, ExecuTorch lowering and the dynamo ONNX export written in a few
lines each, and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {
    "torchscript save": "helpers.export.export_torchscript",
    "lite-interpreter save": "helpers.export.export_lite",
    "executorch lowering": "helpers.export.export_executorch",
    "dynamo onnx export": "helpers.export.export_torch_onnx",
}

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "always traces": '''
def export_safely(module, example, probe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, example)
''',
            "always scripts": '''
def export_safely(module, example, probe):
    return torch.jit.script(module)
''',
            "compares on the example, not the probe": '''
def export_safely(module, example, probe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = torch.jit.trace(module, example)
    with torch.no_grad():
        if torch.allclose(trace(example), module(example)):
            return trace
    return torch.jit.script(module)
''',
        },
        "right": {
            "torch.equal and an early return of the script": '''
def export_safely(module, example, probe):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trace = torch.jit.trace(module, example)
    with torch.no_grad():
        differs = not torch.equal(trace(probe), module(probe))
    if differs:
        return torch.jit.script(module)
    return trace
''',
        }},
    2: {"kind": "experiment",
        "wrong": {
            "exported with a dynamic batch: no error": '''
dyn = torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), dynamo=True, input_names=["images"], verbose=False,
                        dynamic_shapes=({0: torch.export.Dim("b", min=1, max=128)},))
with tempfile.TemporaryDirectory() as tmp:
    dyn.save(f"{tmp}/m.onnx", external_data=False)
    s = ort.InferenceSession(f"{tmp}/m.onnx", providers=["CPUExecutionProvider"])
    fixed_input_shape = s.get_inputs()[0].shape
    try:
        s.run(None, {"images": x_test[:64]})
        fixed_shape_error = None
    except Exception as error:
        fixed_shape_error = error
''',
            "a wrong input name, so a different error": '''
fp = torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), dynamo=True, input_names=["images"], verbose=False)
with tempfile.TemporaryDirectory() as tmp:
    fp.save(f"{tmp}/m.onnx", external_data=False)
    s = ort.InferenceSession(f"{tmp}/m.onnx", providers=["CPUExecutionProvider"])
    fixed_input_shape = s.get_inputs()[0].shape
    try:
        s.run(None, {"x": x_test[:64]})
        fixed_shape_error = None
    except Exception as error:
        fixed_shape_error = error
''',
        },
        "right": {
            "saved with external data, run in a helper function": '''
def run_fixed():
    fp = torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), dynamo=True, input_names=["images"], verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        fp.save(f"{tmp}/fixed.onnx", external_data=True)
        s = ort.InferenceSession(f"{tmp}/fixed.onnx", providers=["CPUExecutionProvider"])
        try:
            s.run(None, {"images": x_test[:64]})
        except ort.capi.onnxruntime_pybind11_state.InvalidArgument as error:
            return s.get_inputs()[0].shape, error
        return s.get_inputs()[0].shape, None
fixed_input_shape, fixed_shape_error = run_fixed()
''',
        }},
    3: {"kind": "code",
        "wrong": {
            "a batch-1 program with a batching predictor": '''
batched_pte = to_edge_transform_and_lower(torch.export.export(model.eval(), (torch.zeros(1, 1, 28, 28),)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch().buffer
def batched_predictor(method, max_batch):
    return lambda x: np.concatenate([method.execute([torch.from_numpy(x[i:i + max_batch])])[0].numpy()
                                     for i in range(0, len(x), max_batch)])
''',
            "an example of 2 images: the planned input buffer is too small": '''
b = torch.export.Dim("batch", min=1, max=max_batch)
batched_pte = to_edge_transform_and_lower(torch.export.export(model.eval(), (torch.zeros(2, 1, 28, 28),),
                                                              dynamic_shapes=({0: b},)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch().buffer
def batched_predictor(method, max_batch):
    return lambda x: np.concatenate([method.execute([torch.from_numpy(x[i:i + max_batch])])[0].numpy()
                                     for i in range(0, len(x), max_batch)])
''',
            "one call per image": '''
b = torch.export.Dim("batch", min=1, max=max_batch)
batched_pte = to_edge_transform_and_lower(torch.export.export(model.eval(), (torch.zeros(max_batch, 1, 28, 28),),
                                                              dynamic_shapes=({0: b},)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch().buffer
def batched_predictor(method, max_batch):
    return lambda x: np.concatenate([method.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])
''',
            "drops the last, partial chunk": '''
b = torch.export.Dim("batch", min=1, max=max_batch)
batched_pte = to_edge_transform_and_lower(torch.export.export(model.eval(), (torch.zeros(max_batch, 1, 28, 28),),
                                                              dynamic_shapes=({0: b},)),
                                          partitioner=[XnnpackPartitioner()]).to_executorch().buffer
def batched_predictor(method, max_batch):
    return lambda x: np.concatenate([method.execute([torch.from_numpy(x[i:i + max_batch])])[0].numpy()
                                     for i in range(0, len(x) - max_batch + 1, max_batch)])
''',
        },
        "right": {
            "np.array_split into equal chunks, the program kept as bytes": '''
import math
b = torch.export.Dim("n", min=1, max=max_batch)
ep = torch.export.export(model.eval(), (torch.zeros(max_batch, 1, 28, 28),), dynamic_shapes=({0: b},))
batched_pte = bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
def batched_predictor(method, max_batch):
    def predict(x):
        chunks = np.array_split(x, math.ceil(len(x) / max_batch))
        return np.concatenate([method.execute([torch.from_numpy(np.ascontiguousarray(c))])[0].numpy() for c in chunks])
    return predict
''',
        }},
    4: {"kind": "code",
        "wrong": {
            "records the version folder, not the format": '''
refused = []
for directory, (load, filename) in {torchscript_dir: (export.load_torchscript, "model.pt"), lite_dir: (export.load_lite, "model.ptl"),
                                    executorch_dir: (export.load_executorch, "model.pte"), onnx_dir: (export.load_onnx, "model.onnx")}.items():
    path = directory / filename
    original = path.read_bytes()
    path.write_bytes(original[:len(original) // 2] + bytes([original[len(original) // 2] ^ 1]) + original[len(original) // 2 + 1:])
    try:
        load(directory)
    except IntegrityError:
        refused.append(directory.name)
    finally:
        path.write_bytes(original)
''',
            "flips nothing, so nothing is refused": '''
refused = []
for directory, load in {torchscript_dir: export.load_torchscript, lite_dir: export.load_lite,
                        executorch_dir: export.load_executorch, onnx_dir: export.load_onnx}.items():
    try:
        load(directory)
    except IntegrityError:
        refused.append(directory.parts[-3])
''',
        },
        "right": {
            "a copy in a temporary folder, restored by construction": '''
import shutil
refused = []
for directory, (load, filename) in {torchscript_dir: (export.load_torchscript, "model.pt"), lite_dir: (export.load_lite, "model.ptl"),
                                    executorch_dir: (export.load_executorch, "model.pte"), onnx_dir: (export.load_onnx, "model.onnx")}.items():
    with tempfile.TemporaryDirectory() as tmp:
        copy = pathlib.Path(tmp) / "v"
        shutil.copytree(directory, copy)
        raw = bytearray((copy / filename).read_bytes())
        raw[len(raw) // 2] ^= 0x80
        (copy / filename).write_bytes(bytes(raw))
        try:
            load(copy)
        except IntegrityError:
            refused.append(directory.parts[-3])
''',
        }},
}
