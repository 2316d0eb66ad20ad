"""Chapter 01: stable log-softmax and cross-entropy, backpropagation through the MLP, central finite differences, the
SGD/momentum/Adam update rules, the mini-batch training loop and per-class precision/recall/F1, each written in NumPy
in the notebook and asserted equal to its helper; and the answers that prove its exercise checks decide."""

IN_THE_OPEN = {
    "stable softmax and cross-entropy": "helpers.losses.cross_entropy_with_logits",
    "MLP backpropagation": "helpers.mlp.loss_and_grads",
    "finite-difference gradient": "helpers.gradcheck.numerical_gradient",
    "optimiser update rules": "helpers.optim.run",
    "mini-batch training loop": "helpers.mlp.train",
    "precision, recall and F1": "helpers.metrics.precision_recall_f1",
}

EXERCISES = {
    1: {"kind": "code",
        "wrong": {
            "forgot the factor 2": '''
def mse_grads(w, b, X, y):
    residual = X @ w + b - y
    return X.T @ residual / len(y), residual.sum() / len(y)
''',
            "summed instead of averaged": '''
def mse_grads(w, b, X, y):
    residual = X @ w + b - y
    return 2 * X.T @ residual, 2 * residual.sum()
''',
            "residual with the wrong sign": '''
def mse_grads(w, b, X, y):
    residual = y - X @ w - b
    return 2 / len(y) * X.T @ residual, 2 / len(y) * residual.sum()
''',
        },
        "right": {
            "means over examples": '''
def mse_grads(w, b, X, y):
    r = X @ w + b - y
    return 2 * (X * r[:, None]).mean(axis=0), np.array([2 * r.mean()])
''',
        }},
    2: {"kind": "code",
        "wrong": {
            "sigmoid first (log 0 at +-1000)": '''
def my_bce_with_logits(z, y):
    p = 1 / (1 + np.exp(-z))
    return float(np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p)))
''',
            "clipped probabilities": '''
def my_bce_with_logits(z, y):
    p = np.clip(1 / (1 + np.exp(-z)), 1e-12, 1 - 1e-12)
    return float(np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p)))
''',
            "unshifted log(1 + e^z)": '''
def my_bce_with_logits(z, y):
    return float(np.mean(np.log(1 + np.exp(z)) - y * z))
''',
        },
        "right": {
            "np.logaddexp": '''
def my_bce_with_logits(z, y):
    return float(np.mean(np.logaddexp(0, z) - y * z))
''',
            "max(z, 0) - z y + log1p(e^-|z|)": '''
def my_bce_with_logits(z, y):
    return np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
''',
        }},
    3: {"kind": "experiment",
        "wrong": {
            "bisected plain gradient descent": '''
low, high = 1e-3, 1.0
for _ in range(40):
    middle = (low + high) / 2
    if optim.diverges(optim.SGD(middle), bowl, start, steps=3000):
        high = middle
    else:
        low = middle
momentum_threshold = low
''',
            "momentum 0.5 instead of 0.9": '''
low, high = 1e-3, 1.0
for _ in range(40):
    middle = (low + high) / 2
    if optim.diverges(optim.Momentum(middle, momentum=0.5), bowl, start, steps=3000):
        high = middle
    else:
        low = middle
momentum_threshold = low
''',
        },
        "right": {
            "bisection returning the diverging end, 25 halvings": '''
low, high = 0.05, 0.5
for _ in range(25):
    middle = (low + high) / 2
    if optim.diverges(optim.Momentum(middle, momentum=0.9), bowl, start, steps=3000):
        high = middle
    else:
        low = middle
momentum_threshold = high
''',
        }},
    4: {"kind": "code",
        "wrong": {
            "diagonal of the Jacobian only": '''
def softmax_backward(z, grad_p):
    p = losses.softmax(z)
    return grad_p * p * (1 - p)
''',
            "weighted mean over the whole batch, not per row": '''
def softmax_backward(z, grad_p):
    p = losses.softmax(z)
    return p * (grad_p - (grad_p * p).sum())
''',
            "passed the gradient straight through": '''
def softmax_backward(z, grad_p):
    return grad_p
''',
        },
        "right": {
            "the full Jacobian with einsum": '''
def softmax_backward(z, grad_p):
    p = softmax_textbook(z)
    jacobian = np.einsum("nc,cm->ncm", p, np.eye(z.shape[1])) - np.einsum("nc,nm->ncm", p, p)
    return np.einsum("nc,ncm->nm", grad_p, jacobian)
''',
        }},
}
