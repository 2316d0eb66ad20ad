"""The course's inference server (chapter 06): `python -m helpers.serving --help`.

    backends    ONNX Runtime and TensorFlow SavedModel behind one interface
    repository  the TF Serving layout <repository>/<model>/<version>/, watched, verified, hot-swapped
    batching    dynamic batching of concurrent requests
    drift       the drift monitor each served version runs against its shipped reference (chapter 07)
    protocols   TF Serving REST and Open Inference Protocol (KServe v2) parsing and responses
    connections limits on slow and greedy clients, below the app: header and body timeouts, header size, per address
    app         the app: settings, the state every route shares, the one inference path, one routing table
    http        what every route module shares: JSON answers, name and version checks, route makers
    routes_v2   Open Inference Protocol (KServe v2): health, metadata, readiness, /infer
    routes_tfserving   TensorFlow Serving REST: /v1/models/... status, metadata, :predict
    routes_repository  the model repository extension: index, load, unload
    routes_ops  /metrics and the load-test floors
    demo        the browser demo under /demo/ (chapter 09)
    workers     --workers N: N worker processes on one port under a supervisor, their metrics shared
    process     start a server (or any HTTP process) from a notebook and always stop it
    client      a small Python client for both protocols
    loadgen     load tests with wrk
"""
