"""The course's inference server (chapter 06): `python -m helpers.serving --help`.

    backends    ONNX Runtime and TensorFlow SavedModel behind one interface
    repository  the TF Serving layout <repository>/<model>/<version>/, watched, verified, hot-swapped
    batching    dynamic batching of concurrent requests
    protocols   TF Serving REST and Open Inference Protocol (KServe v2) parsing and responses
    app         the FastAPI app: routes, limits, API key, metrics
    process     start a server (or any HTTP process) from a notebook and always stop it
    client      a small Python client for both protocols
    loadgen     load tests with wrk
"""
