"""The library the course's notebooks (and the course's server) import: one module per concern.

Import the module you need (`from helpers import data, report`); nothing heavy is imported here. The modules by
chapter, in layers: each imports only layers below its own (pyproject.toml's import-linter contracts check it).

    chapter 13      privacy         membership attacks (loss threshold, LiRA with shadow models), DP-SGD with Opacus
    chapters 10-11  model_servers/  Triton, PyTriton, MLServer, BentoML, LitServe, Ray Serve: started, measured (10)
                    ab_testing      sample sizes, the two-proportion test, peeking and the always-valid mSPRT (11)
    chapter 12      malicious_files model files that run code when loaded, the scanners measured on them, safe loaders
                    adversarial     FGSM, PGD (checked against ART), fast adversarial training
                    extraction      a copy of the served model trained from its answers, against the query budget
    chapter 09      demo            the draw-a-digit page's model repository and `make demo`
                    browser         Chromium driven by Playwright: the page as a test and a benchmark
    chapters 05-08  quantize        int8 arithmetic, LiteRT / ONNX Runtime / PT2E quantization, QAT
                    pruning         magnitude and channel pruning
                    naive_flask     the Flask + model.predict baseline chapter 06 measures the server against
                    monitoring/     Prometheus, drift detectors, simulated shifts, accuracy without labels (07)
                    distributed     data-parallel training under torchrun (08)
                    ray_serving     the model as Ray Serve deployments (08)
    chapters 01-04  data            MNIST: fetch, verify, load
                    metrics, gradcheck, optim, mlp              the math of chapter 01, in NumPy
                    models, training, model_store, tensorboard_logs   the classifiers, their training, on disk (02)
                    export, savedmodel_predict                  SavedModel, ONNX, TorchScript, ExecuTorch (03-04)
                    bench, plots, report, env, digits           measuring, drawing, recording, versions, strokes
    the server      serving/        the course's inference server (06): protocols, batching, versions, drift monitor, explanations
    below the server runtimes       every ONNX Runtime session and SavedModel load, with the one thread setting
                    processes       the one way to start and stop a process, and only the course's own
                    losses          losses and the one softmax, in plain NumPy (chapter 01's reference)
                    signing, tls    versions signed and verified (model-signing, local keys); certificates for HTTPS (12)
                    attributions    saliency, Integrated Gradients, occlusion (Captum), their tests (13)
    foundation      integrity, fixes, progress, paths           hashes, the fixes table, progress bars, where things live
                    quiet           the stack's start-up notices kept out of cell outputs (the kernel installs it)
                    show            the course's own code displayed in a notebook, read from its source file

The machinery that runs, checks and packages the course (runner, `make course`, site, student, doctor) is not here:
it is the top-level package `course_tools`, which imports this one and never the reverse.
"""

import os

# TensorFlow prints pages of C++ start-up logs (CPU features, oneDNN notes) that teach nothing;
# keep its warnings and errors. Must be set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
