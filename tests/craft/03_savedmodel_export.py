"""Chapter 03: the uint8 serving signature, the tf2onnx conversion and Keras' ONNX export, each written in the notebook
and checked against the helper; and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "uint8 serving signature": "helpers.export.export_savedmodel",
    "tf2onnx conversion": "helpers.export.savedmodel_to_onnx",
    "keras onnx export": "helpers.export.savedmodel_to_onnx",
}

EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "called with one image, so nothing fails": '''
fixed = export.load_savedmodel(export.export_savedmodel(model, "mnist", 9, card, batch_size=1))
fixed.signatures[export.SERVING_DEFAULT](images=tf.constant(x_test_uint8[:1]))
fixed_batch_error = None
shutil.rmtree(export.export_dir("savedmodel", "mnist", 9), ignore_errors=True)
''',
            "the error is a typo, not the batch size": '''
try:
    fixed = export.load_savedmodel(export.export_savedmodel(model, "mnist", 9, card, batch_size=1))
    fixed.signatures[export.SERVING_DEFAULT](image=tf.constant(x_test_uint8[:8]))
except Exception as error:
    fixed_batch_error = error
finally:
    shutil.rmtree(export.export_dir("savedmodel", "mnist", 9), ignore_errors=True)
''',
            "version 9 left in the repository": '''
try:
    fixed = export.load_savedmodel(export.export_savedmodel(model, "mnist", 9, card, batch_size=1))
    fixed.signatures[export.SERVING_DEFAULT](images=tf.constant(x_test_uint8[:8]))
except Exception as error:
    fixed_batch_error = error
'''},
        "right": {"two images": '''
directory = export.export_savedmodel(model, "mnist", 9, card, batch_size=1)
try:
    export.load_savedmodel(directory).signatures["serving_default"](images=tf.constant(x_test_uint8[:2]))
except tf.errors.InvalidArgumentError as error:
    fixed_batch_error = error
shutil.rmtree(directory)
'''}},
    2: {"kind": "experiment",
        "wrong": {
            "stored the message, not the exception": '''
weights = savedmodel_v2 / "variables" / "variables.data-00000-of-00001"
data = weights.read_bytes()
weights.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
try:
    export.load_savedmodel(savedmodel_v2)
except IntegrityError as error:
    tamper_error = str(error)
finally:
    weights.write_bytes(data)
''',
            "tampered the graph, not the weights": '''
graph = savedmodel_v2 / "saved_model.pb"
data = graph.read_bytes()
graph.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
try:
    export.load_savedmodel(savedmodel_v2)
except IntegrityError as error:
    tamper_error = error
finally:
    graph.write_bytes(data)
'''},
        "right": {"first byte changed, restored with shutil": '''
weights = savedmodel_v2 / "variables" / "variables.data-00000-of-00001"
backup = Path(tempfile.mkdtemp()) / weights.name  # outside the export: an extra file would be refused too
shutil.copy(weights, backup)
data = weights.read_bytes()
weights.write_bytes(bytes([data[0] ^ 0x01]) + data[1:])
try:
    export.load_savedmodel(savedmodel_v2)
except IntegrityError as error:
    tamper_error = error
shutil.move(backup, weights)
'''}},
    3: {"kind": "code",
        "wrong": {
            "forgot to divide by 255": '''
@tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
def serving_png(png):
    images = tf.map_fn(lambda one: tf.ensure_shape(tf.io.decode_png(one, channels=1), [28, 28, 1]), png,
                       fn_output_signature=tf.uint8)
    logits = model(tf.cast(images, tf.float32), training=False)
    return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}
''',
            "takes uint8 pixels, not PNG bytes": '''
@tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="png")])
def serving_png(png):
    logits = model(tf.cast(png, tf.float32)[..., None] / 255.0, training=False)
    return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}
'''},
        "right": {
            "decode_image and a reshape": '''
@tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
def serving_png(png):
    decoded = tf.map_fn(lambda s: tf.io.decode_image(s, channels=1, expand_animations=False), png, fn_output_signature=tf.uint8)
    x = tf.reshape(tf.cast(decoded, tf.float32) / 255.0, [-1, 28, 28, 1])
    logits = model(x, training=False)
    return {"classes": tf.argmax(logits, axis=1), "probabilities": tf.nn.softmax(logits)}
''',
            "reuses my_serving_default": '''
@tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="png")])
def serving_png(png):
    pixels = tf.map_fn(lambda s: tf.io.decode_png(s, channels=1)[:, :, 0], png, fn_output_signature=tf.TensorSpec([28, 28], tf.uint8))
    return my_serving_default(pixels)
'''}},
    4: {"kind": "code",
        "wrong": {
            "input name hard-coded": '''
def max_logit_gap(file_a, file_b, images):
    a = ort.InferenceSession(str(file_a)).run(None, {"images": images})[0]
    b = ort.InferenceSession(str(file_b)).run(None, {"images": images})[0]
    return float(np.abs(a - b).max())
''',
            "mean instead of max": '''
def max_logit_gap(file_a, file_b, images):
    out = [s.run(None, {s.get_inputs()[0].name: images})[0] for s in (ort.InferenceSession(str(f)) for f in (file_a, file_b))]
    return float(np.abs(out[0] - out[1]).mean())
''',
            "compares probabilities": '''
def max_logit_gap(file_a, file_b, images):
    out = [s.run(None, {s.get_inputs()[0].name: images})[0] for s in (ort.InferenceSession(str(f)) for f in (file_a, file_b))]
    return float(np.abs(export.softmax(out[0]) - export.softmax(out[1])).max())
'''},
        "right": {"input names from the ONNX graph": '''
def max_logit_gap(file_a, file_b, images):
    def logits(path):
        name = onnx.load(str(path)).graph.input[0].name
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {name: images})[0]
    return float(np.max(np.abs(logits(file_a) - logits(file_b))))
'''}},
}
