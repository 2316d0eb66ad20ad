"""The naive way, as most tutorials write it (the source document names Flask for "building a model API quickly",
§7.2): Flask's development server calling Keras `model.predict` for every request. Chapter 06's baseline, kept to be
measured, not deployed: a development server, a framework call with a large fixed cost per request, no batching, no
validation, no limits.

    python -m helpers.naive_flask PORT
"""

from __future__ import annotations

import sys

import numpy as np


def create_app(model):
    from flask import Flask, jsonify, request

    app = Flask(__name__)

    @app.get("/health")
    def health():
        return jsonify({"ok": True})

    @app.post("/predict")
    def predict():
        instances = np.asarray(request.get_json()["instances"], dtype=np.float32)
        return jsonify({"predictions": model.predict(instances, verbose=0).tolist()})

    return app


if __name__ == "__main__":
    from helpers import model_store

    keras_model, _ = model_store.load("keras", "source_cnn")
    create_app(keras_model).run(host="127.0.0.1", port=int(sys.argv[1]))  # Flask's development server, threaded
