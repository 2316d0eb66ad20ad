"""Chapter 10's model servers, each serving chapter 04's ONNX export behind one small interface (`common.Served`).

    SERVERS[name].missing()                 None, or why that server cannot run here (naming it)
    SERVERS[name].running(onnx_dir, ...)    a context manager: the server on 127.0.0.1, ready, then stopped
    NOT_RUN                                 the servers the chapter does not run, with the reason

What a learner writes to serve the model with each one lives in servers/<name>/ at the course's root; the modules
here only start, address and stop them. Servers whose pins clash with the course's (Triton, MLServer, BentoML) run from
venvs of their own under build/servers/, built by `make setup` (course_tools/server_envs.py).
"""

from helpers.model_servers import bentoml, course, litserve, mlserver, pytriton, ray_serve, triton

SERVERS = {module.NAME: module for module in (course, triton, pytriton, mlserver, bentoml, litserve, ray_serve)}

NOT_RUN = {
    "TensorFlow Serving": "no binary on the package registries: PyPI has only its client API (tensorflow-serving-api); "
                          "the server ships as a Docker image or from Google's own apt repository, which the course "
                          "does not add to a learner's machine",
    "TorchServe": "in 'limited maintenance' since early 2025 (no planned updates, bug fixes or security patches, its "
                  "documentation says) and archived by its maintainers on 2025-08-07: it still installs, but nothing "
                  "found in it will be fixed",
    "KServe": "not a server process but a Kubernetes platform: it runs servers like Triton and MLServer as pods behind "
              "its own controller and speaks their Open Inference Protocol",
}
