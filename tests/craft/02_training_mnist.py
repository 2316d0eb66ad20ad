"""Chapter 02: builds Keras compile/fit and the PyTorch training loop in the open, and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {  # mechanism name (as in the cells' metadata) -> the production helper its check compares with
    "keras compile and fit": "helpers.training.train_keras",
    "pytorch training loop": "helpers.training.train_torch",
}

_EX1 = '''
from keras import layers
exercise_recipe = training.Recipe(epochs={epochs}, batch_size=128, peak_lr=5e-3)
def build_bn():
    return keras.Sequential([keras.Input((28, 28, 1)), {conv}, layers.BatchNormalization(), {relu},
                             layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10)])
found = {{}}
for label, build in {{"bn": build_bn, "plain": lambda: models.keras_model("source_cnn")}}.items():
    env.seed_everything(SEED)
    model = build()
    rows = training.train_keras(model, x_train_keras[:10_000], y_train[:10_000], x_test_keras, y_test, exercise_recipe,
                                paths.artifacts() / "runs" / "keras" / f"exercise_variant_{{label}}").rows
    found[label] = model, rows[-1]["val_accuracy"]
(bn_model, bn_accuracy), (plain_model, plain_accuracy) = found["bn"], found["plain"]
bn_helps = {helps}
'''

_EX2 = '''
final_loss_by_lr = {{}}
for lr in [1e-3, 1e-2, 1e-1, 1.0]:
    env.seed_everything(SEED)
    {build}
    final_loss_by_lr[lr] = training.train_torch(model, training.images_for("torch", x_train[:5000]), y_train[:5000],
                                                training.images_for("torch", x_test[:1000]), y_test[:1000],
                                                training.Recipe(epochs=1, batch_size=128, peak_lr=lr{schedule}), None).rows[-1]["loss"]
diverged = {diverged}
'''

_EX3 = '''
curve = {{}}
for n in [600, 1800, 6000]:
    env.seed_everything(SEED)
    rows = training.train_torch(models.torch_model("source_cnn"), training.images_for("torch", mnist.x_train[:n]), mnist.y_train[:n],
                                training.images_for("torch", x_test), y_test, training.Recipe(epochs={epochs}, batch_size=128, peak_lr=5e-3), None).rows
    curve[n] = rows[-1]["val_accuracy"]
tenfold_gain = {gain}
'''

_EX4 = '''
def train_with_recipe(model, x, y, recipe):
    torch.manual_seed(recipe.seed)
    batch_order = torch.Generator().manual_seed(recipe.seed)
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    total_steps = recipe.epochs * recipe.steps_per_epoch(len(x))
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.peak_lr)
    {scheduler}
    step, losses = 0, []
    for _ in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(x_t), generator=batch_order)
        total = 0.0
        for i in range(0, len(x_t), recipe.batch_size):
            {before}
            idx = order[i : i + recipe.batch_size]
            loss = F.cross_entropy(model(x_t[idx]), y_t[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            {after}
            step += 1
            total += loss.item() * len(idx)
        losses.append(total / len(x_t))
    return losses
'''
_SET_LR = 'for group in optimizer.param_groups: group["lr"] = training.learning_rate({s}, total_steps, recipe)'
_LAMBDA = ('scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, '
           'lambda s: training.learning_rate(s, total_steps, recipe) / recipe.peak_lr)')

EXERCISES = {
    1: {"kind": "experiment",
        "wrong": {
            "batch norm after the ReLU": _EX1.format(epochs=1, conv='layers.Conv2D(32, 3, activation="relu")',
                                                     relu='layers.Activation("linear")', helps="bn_accuracy > plain_accuracy"),
            "two epochs instead of one": _EX1.format(epochs=2, conv="layers.Conv2D(32, 3)", relu='layers.Activation("relu")',
                                                     helps="bn_accuracy > plain_accuracy"),
            "answer read backwards": _EX1.format(epochs=1, conv="layers.Conv2D(32, 3)", relu='layers.Activation("relu")',
                                                 helps="bn_accuracy <= plain_accuracy"),
        },
        "right": {
            "a ReLU layer": _EX1.format(epochs=1, conv="layers.Conv2D(32, 3)", relu="layers.ReLU()",
                                        helps="bool(bn_accuracy > plain_accuracy)"),
        }},
    2: {"kind": "experiment",
        "wrong": {
            "the default schedule, not a constant rate": _EX2.format(build='model = models.torch_model("source_cnn")', schedule="",
                                                                    diverged="{lr for lr, l in final_loss_by_lr.items() if l >= np.log(10)}"),
            "one model reused across rates": _EX2.format(build='model = models.torch_model("source_cnn") if lr == 1e-3 else model',
                                                         schedule=", warmup_fraction=0, cosine=False",
                                                         diverged="{lr for lr, l in final_loss_by_lr.items() if l >= np.log(10)}"),
            "every rate above 1e-3 called diverged": _EX2.format(build='model = models.torch_model("source_cnn")',
                                                                  schedule=", warmup_fraction=0, cosine=False",
                                                                  diverged="{1e-2, 1e-1, 1.0}"),
        },
        "right": {
            "diverged from a loop": _EX2.format(build='model = models.torch_model("source_cnn")', schedule=", warmup_fraction=0, cosine=False",
                                                diverged="set()\nfor lr, l in final_loss_by_lr.items():\n    if not l < np.log(10):\n        diverged.add(lr)"),
        }},
    3: {"kind": "experiment",
        "wrong": {
            "one epoch instead of two": _EX3.format(epochs=1, gain="curve[6000] - curve[600]"),
            "gain as a ratio": _EX3.format(epochs=2, gain="curve[6000] / curve[600]"),
        },
        "right": {
            "gain in one expression": _EX3.format(epochs=2, gain="max(curve.values()) - min(curve.values())"),
        }},
    4: {"kind": "code",
        "wrong": {
            "no schedule: constant peak rate": _EX4.format(scheduler="", before="", after=""),
            "schedule one step late": _EX4.format(scheduler="", before="", after=_SET_LR.format(s="step")),
            "schedule restarted every epoch": _EX4.format(scheduler="", before=_SET_LR.format(s="i // recipe.batch_size"), after=""),
        },
        "right": {
            "rate set before each step": _EX4.format(scheduler="", before=_SET_LR.format(s="step"), after=""),
            "LambdaLR, stepped after the optimizer": _EX4.format(scheduler=_LAMBDA, before="", after="scheduler.step()"),
        }},
}
