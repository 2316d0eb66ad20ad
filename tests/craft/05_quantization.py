"""Chapter 05: the int8 matrix multiply, the LiteRT full-integer conversion, ONNX Runtime's static quantization, the
PT2E flow and magnitude pruning, each written in the notebook and checked against the helper; and the answers that
prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "int8 matmul": "helpers.quantize.integer_matmul",
    "litert int8 conversion": "helpers.quantize.export_tflite",
    "onnx static quantization": "helpers.quantize.quantize_onnx",
    "pt2e quantization": "helpers.quantize.ptq_pt2e",
    "magnitude pruning": "helpers.pruning.prune_magnitude",
}

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "one scale for the whole tensor": '''
def quantize_per_channel(w, bits):
    qmax = 2 ** (bits - 1) - 1
    scale = np.abs(w).max() / qmax
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int32), np.full(len(w), scale)
''',
            "the unsigned range, 2**bits - 1": '''
def quantize_per_channel(w, bits):
    qmax = 2 ** bits - 1
    scales = np.abs(w).max(axis=1) / qmax
    return np.clip(np.round(w / scales[:, None]), -qmax, qmax).astype(np.int32), scales
''',
            "truncates instead of rounding": '''
def quantize_per_channel(w, bits):
    qmax = 2 ** (bits - 1) - 1
    scales = np.abs(w).max(axis=1) / qmax
    return (w / scales[:, None]).astype(np.int32), scales
''',
            "one level too many, -2**(bits-1) to 2**(bits-1)": '''
def quantize_per_channel(w, bits):
    qmax = 2 ** (bits - 1)
    scales = np.abs(w).max(axis=1) / qmax
    return np.clip(np.round(w / scales[:, None]), -qmax, qmax).astype(np.int32), scales
''',
        },
        "right": {
            "in PyTorch, with keepdim": '''
def quantize_per_channel(w, bits):
    t = torch.as_tensor(w)
    qmax = 2 ** (bits - 1) - 1
    scales = t.abs().amax(dim=1, keepdim=True) / qmax
    q = torch.clamp(torch.round(t / scales), -qmax, qmax).to(torch.int64)
    return q.numpy(), scales.squeeze(1).numpy()
''',
            "rint and int16, rows one by one": '''
def quantize_per_channel(w, bits):
    top = (1 << (bits - 1)) - 1
    rows, scales = [], []
    for row in w:
        s = np.max(np.abs(row)) / top
        rows.append(np.rint(row / s).clip(-top, top).astype(np.int16))
        scales.append(s)
    return np.stack(rows), np.array(scales)
''',
        }},
    2: {"kind": "experiment",
        "wrong": {
            "did not multiply by 255": '''
calibration_results = {}
for label, images in {"10 images": calibration_for["torch"][:10], "1 image": calibration_for["torch"][:1],
                      "forgot /255": calibration_for["torch"][:100]}.items():
    variant = "exercise_" + label.replace(" ", "_").replace("/", "")
    directory = quantize.quantize_onnx(onnx_fp32, "source_cnn", "static", images, "minmax", variant=variant)
    calibration_results[label] = accuracy(export.onnx_predictor(export.load_onnx(directory)), "torch")
''',
            "accuracies in percent": '''
calibration_results = {}
for label, images in {"10 images": calibration_for["torch"][:10], "1 image": calibration_for["torch"][:1],
                      "forgot /255": calibration_for["torch"][:100] * 255}.items():
    variant = "exercise_" + label.replace(" ", "_").replace("/", "")
    directory = quantize.quantize_onnx(onnx_fp32, "source_cnn", "static", images, "minmax", variant=variant)
    calibration_results[label] = 100 * accuracy(export.onnx_predictor(export.load_onnx(directory)), "torch")
''',
        },
        "right": {
            "the hand-written quantize_static of section 2b": '''
calibration_results = {}
for label, images in {"10 images": calibration_for["torch"][:10], "1 image": calibration_for["torch"][:1],
                      "forgot /255": calibration_for["torch"][:100] * 255}.items():
    path = str(by_hand / f"calibrated_{len(calibration_results)}.onnx")
    quantize_static(str(by_hand / "prepared.onnx"), path, ImageReader(images, input_name), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    predicted = export.in_batches(lambda x: session.run(None, {input_name: x})[0], x_test["torch"]).argmax(1)
    calibration_results[label] = float((predicted == y_test).mean())
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "the largest sparsity that still holds": '''
unpruned = catalog["PyTorch eager fp32"]["accuracy"]
grid = [*np.round(np.arange(0.20, 0.951, 0.05), 2).tolist(), 0.99]
holds = [s for s in grid if accuracy(export.torch_predictor(pruning.prune_magnitude(torch_model, s)), "torch") >= unpruned - 0.01]
breaking_sparsity = max(holds)
''',
            "a 0.1-point bar instead of 1 point": '''
unpruned = catalog["PyTorch eager fp32"]["accuracy"]
grid = [*np.round(np.arange(0.20, 0.951, 0.05), 2).tolist(), 0.99]
breaking_sparsity = next(s for s in grid
                         if accuracy(export.torch_predictor(pruning.prune_magnitude(torch_model, s)), "torch") < unpruned - 0.001)
''',
            "the last sparsity of the grid": '''
breaking_sparsity = 0.99
''',
        },
        "right": {
            "stops at the first break, with prune_smallest": '''
bar = catalog["PyTorch eager fp32"]["accuracy"] - 0.01
for s in [0.2 + 0.05 * i for i in range(16)] + [0.99]:
    if accuracy(export.torch_predictor(prune_smallest(torch_model, s)), "torch") < bar:
        breaking_sparsity = s
        break
''',
        }},
    4: {"kind": "question",
        "wrong": {
            "indices counted from 1": '''
position_of = {image.tobytes(): i + 1 for i, image in enumerate(mnist.x_train)}
calibration_indices = [position_of[image.tobytes()] for image in calibration]
''',
            "sorted, so no longer in the order of calibration": '''
position_of = {image.tobytes(): i for i, image in enumerate(mnist.x_train)}
calibration_indices = sorted(position_of[image.tobytes()] for image in calibration)
''',
        },
        "right": {
            "rng indices re-drawn with the same seed": '''
calibration_indices = list(np.random.default_rng(SEED).choice(len(mnist.x_train), size=len(calibration), replace=False))
''',
            "hashes of the images": '''
wanted = {hash(image.tobytes()): k for k, image in enumerate(calibration)}
calibration_indices = [None] * len(calibration)
for i, image in enumerate(mnist.x_train):
    k = wanted.get(hash(image.tobytes()))
    if k is not None:
        calibration_indices[k] = i
''',
        }},
}
