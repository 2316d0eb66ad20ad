"""What each notebook must have recorded (helpers.report) after a smoke-mode run, and how good it must be.

Kept here, beside the test, not in the notebooks: a notebook cannot lower its own bar.
Every notebook needs an entry; every metric named here must be present.
"""

import operator

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq}

SMOKE_BUDGET_S = 90  # design doc: each notebook in smoke mode <= 90 s
TIME_LIMIT_FACTOR = 1.2  # FSDL labs' rule: fail a notebook that runs past its target + 20 %

EXPECTATIONS = {
    "01_loss_and_gradients": {
        # hand-derived gradients agree with every independent route, in float64
        "max_rel_error_finite_differences": ("<=", 1e-6),
        "max_rel_error_tf_gradient_tape": ("<=", 1e-6),
        "max_rel_error_torch_autograd": ("<=", 1e-6),
        # softmax applied twice cannot push the loss below log(9 + e) - 1 for 10 classes
        "double_softmax_min_loss": (">=", 1.46),
        # every optimiser makes real progress from the same start on the quadratic bowl
        "final_loss_sgd": ("<", 1e-2),
        "final_loss_momentum": ("<", 1e-2),
        "final_loss_adam": ("<", 1e-1),
        # the measured divergence threshold of the learning rate is the theoretical 2 / lambda_max
        "divergence_threshold_rel_error": ("<=", 0.01),
        # hand-counted metrics equal sklearn's
        "metrics_max_abs_diff_vs_sklearn": ("<=", 1e-12),
    },
}
