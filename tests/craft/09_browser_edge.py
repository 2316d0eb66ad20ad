"""Chapter 09: the MNIST-style preprocessing of a drawing and the page's on-device inference (session, input tensor,
output, softmax), each written in the notebook in numpy and Python's ONNX Runtime and checked against the helper and
the page; and the answers that prove its exercise checks decide. The wrong answers open no page: the check refuses
them before the page's part matters."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production code its check compares with
    "mnist-style preprocessing": "helpers.digits.strokes_to_image",
    "the page's inference, in python": "helpers.browser.DemoPage.classify",
}

EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "the model files only, not the visit": '''
first_visit_bytes = {name: len(content) for name, content in model_bytes.items()}
model_share = len(model_bytes["mnist"]) / first_visit_bytes["mnist"]
''',
            "the share as a percentage": '''
first_visit_bytes = {name: int(timings.loc[(name, 1), "first_visit_MB"] * 2**20) for name in exports}
model_share = 100 * timings.loc[("mnist", 1), "model_kB"] * 1024 / first_visit_bytes["mnist"]
''',
            "the share of the int8 visit": '''
first_visit_bytes = {name: int(timings.loc[(name, 1), "first_visit_MB"] * 2**20) for name in exports}
model_share = len(model_bytes["mnist_int8"]) / first_visit_bytes["mnist_int8"]
''',
        },
        "right": {
            "from section 4's first visits, no new page": '''
first_visit_bytes = {name: timings.loc[(name, 1), "first_visit_MB"] * 2**20 for name in exports}
model_share = timings.loc[("mnist", 1), "model_kB"] * 1024 / first_visit_bytes["mnist"]
''',
        }},
    2: {"kind": "experiment",
        "wrong": {
            "rejects 5 %, not 1 %": '''
confidence = export.softmax(python_logits["mnist"][:1000].astype(np.float64)).max(axis=1)
threshold = float(np.quantile(confidence, 0.05))
scribbles = digits.random_scribbles(np.random.default_rng(SEED), 200)
images = np.stack([digits.strokes_to_image(s) for s in scribbles]).reshape(-1, 1, 28, 28)
scribbles_rejected = float(np.mean(export.softmax(predict_fp32(images).astype(np.float64)).max(axis=1) < threshold))
page_rejects = page_accepts_digit = True
''',
            "a threshold on the logits": '''
top_logit = python_logits["mnist"][:1000].max(axis=1)
threshold = float(np.quantile(top_logit, 0.01))
scribbles = digits.random_scribbles(np.random.default_rng(SEED), 200)
images = np.stack([digits.strokes_to_image(s) for s in scribbles]).reshape(-1, 1, 28, 28)
scribbles_rejected = float(np.mean(predict_fp32(images).max(axis=1) < threshold))
page_rejects = page_accepts_digit = True
''',
            "the share of scribbles accepted": '''
confidence = export.softmax(python_logits["mnist"][:1000].astype(np.float64)).max(axis=1)
threshold = float(np.sort(confidence)[10])
scribbles = digits.random_scribbles(np.random.default_rng(SEED), 200)
images = np.stack([digits.strokes_to_image(s) for s in scribbles]).reshape(-1, 1, 28, 28)
scribbles_rejected = float(np.mean(export.softmax(predict_fp32(images).astype(np.float64)).max(axis=1) >= threshold))
page_rejects = page_accepts_digit = True
''',
            "the page's part left out": '''
confidence = export.softmax(python_logits["mnist"][:1000].astype(np.float64)).max(axis=1)
threshold = float(np.sort(confidence)[10])
scribbles = digits.random_scribbles(np.random.default_rng(SEED), 200)
images = np.stack([digits.strokes_to_image(s) for s in scribbles]).reshape(-1, 1, 28, 28)
scribbles_rejected = float(np.mean(export.softmax(predict_fp32(images).astype(np.float64)).max(axis=1) < threshold))
page_rejects = page_accepts_digit = None if have_browser else True
''',
        },
        "right": {
            "the 11th smallest confidence, numpy arrays kept": '''
confidence = np.sort(export.softmax(python_logits["mnist"][:1000].astype(np.float64)).max(axis=1))
threshold = confidence[10]
scribbles = digits.random_scribbles(np.random.default_rng(SEED), 200)
probs = export.softmax(predict_fp32(np.stack([digits.strokes_to_image(s)[None] for s in scribbles])).astype(np.float64))
scribbles_rejected = np.mean(probs.max(axis=1) < threshold)
page_rejects = page_accepts_digit = True
if have_browser:
    with browser.DemoPage(chromium, server.url, reject=float(threshold)) as p:
        p.draw(scribbles[int(np.argmin(probs.max(axis=1)))], steps=1)
        page_rejects = p.classify("device")["rejected"]
        p.clear()
        p.draw(digits.image_to_strokes(mnist.x_test[0]))
        page_accepts_digit = not p.classify()["rejected"]
''',
        }},
    3: {"kind": "code",
        "wrong": {
            "keeps the centre-of-mass shift": '''
def preprocess_box_centred(strokes):
    return digits.strokes_to_image(strokes)
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {way: float(np.mean(predict_fp32(np.stack([f(s) for s in redrawn]).reshape(-1, 1, 28, 28)).argmax(1) == mnist.y_test[:200]))
            for way, f in (("mass", preprocess), ("box", preprocess_box_centred))}
''',
            "the box in the frame's corner": '''
def preprocess_box_centred(strokes):
    points = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])
    x0, y0 = points.min(axis=0) - PEN
    width, height = points.max(axis=0) + PEN - (x0, y0)
    scale = BOX / max(width, height)
    centres = (np.arange(SIZE * S) + 0.5) / S
    xs, ys = np.meshgrid(x0 + centres / scale, y0 + centres / scale)
    covered = np.zeros(xs.shape, dtype=bool)
    for stroke in strokes:
        stroke = np.asarray(stroke, dtype=np.float64)
        for (ax, ay), (bx, by) in zip(stroke, stroke[1:]) if len(stroke) > 1 else [(stroke[0], stroke[0])]:
            dx, dy = bx - ax, by - ay
            length2 = dx * dx + dy * dy
            t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0, 1) if length2 > 0 else 0.0
            covered |= (xs - (ax + t * dx)) ** 2 + (ys - (ay + t * dy)) ** 2 <= PEN**2
    return covered.reshape(SIZE, S, SIZE, S).mean(axis=(1, 3)).astype(np.float32)
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {way: float(np.mean(predict_fp32(np.stack([f(s) for s in redrawn]).reshape(-1, 1, 28, 28)).argmax(1) == mnist.y_test[:200]))
            for way, f in (("mass", preprocess), ("box", preprocess_box_centred))}
''',
            "the right function, accuracies in percent": '''
def preprocess_box_centred(strokes):
    return digits.coverage(digits.check_strokes(strokes)).astype(np.float32)
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {way: 100 * float(np.mean(predict_fp32(np.stack([f(s) for s in redrawn]).reshape(-1, 1, 28, 28)).argmax(1) == mnist.y_test[:200]))
            for way, f in (("mass", preprocess), ("box", preprocess_box_centred))}
''',
            "the two accuracies swapped": '''
def preprocess_box_centred(strokes):
    return digits.coverage(digits.check_strokes(strokes)).astype(np.float32)
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {way: float(np.mean(predict_fp32(np.stack([f(s) for s in redrawn]).reshape(-1, 1, 28, 28)).argmax(1) == mnist.y_test[:200]))
            for way, f in (("box", preprocess), ("mass", preprocess_box_centred))}
''',
        },
        "right": {
            "reusing helpers.digits, float64 out, numpy accuracies": '''
def preprocess_box_centred(strokes):
    return digits.coverage(digits.check_strokes(strokes))
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {}
for way, f in (("mass", digits.strokes_to_image), ("box", preprocess_box_centred)):
    logits = predict_fp32(np.stack([f(s) for s in redrawn]).astype(np.float32)[:, None])
    accuracy[way] = (logits.argmax(1) == mnist.y_test[:200]).mean()
accuracy["difference"] = accuracy["mass"] - accuracy["box"]
''',
            "numpy vectors and hypot for the distance": '''
def preprocess_box_centred(strokes):
    strokes = [np.asarray(stroke, dtype=np.float64) for stroke in strokes]
    points = np.concatenate(strokes)
    low, high = points.min(axis=0) - PEN, points.max(axis=0) + PEN
    scale = BOX / (high - low).max()
    offset = (SIZE - (high - low) * scale) / 2
    centres = (np.arange(SIZE * S) + 0.5) / S
    xs, ys = np.meshgrid(low[0] + (centres - offset[0]) / scale, low[1] + (centres - offset[1]) / scale)
    covered = np.zeros(xs.shape, dtype=bool)
    for stroke in strokes:
        for a, b in (zip(stroke, stroke[1:]) if len(stroke) > 1 else [(stroke[0], stroke[0])]):
            d = b - a
            length2 = d[0] * d[0] + d[1] * d[1]
            t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / length2, 0, 1) if length2 > 0 else 0.0
            covered |= np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1])) <= PEN
    return covered.reshape(SIZE, S, SIZE, S).mean(axis=(1, 3)).astype(np.float32)
redrawn = [digits.image_to_strokes(image) for image in mnist.x_test[:200]]
accuracy = {}
for way, f in (("mass", preprocess), ("box", preprocess_box_centred)):
    accuracy[way] = float(np.mean(predict_fp32(np.stack([f(s) for s in redrawn]).reshape(-1, 1, 28, 28)).argmax(1) == mnist.y_test[:200]))
''',
        }},
}
