"""Run a SavedModel in a fresh process that has no model code: only TensorFlow and NumPy are imported here.

    python -m helpers.savedmodel_predict SAVEDMODEL_DIR IMAGES.npy OUTPUT.npz

Calls the `serving_default` signature on the uint8 images and writes its outputs (probabilities, classes) to OUTPUT.npz.
This is how a serving process sees an export: whatever the graph does not contain is not there.
"""

import sys

import numpy as np
import tensorflow as tf


def main(savedmodel: str, images: str, output: str) -> None:
    serving = tf.saved_model.load(savedmodel).signatures["serving_default"]
    outputs = serving(images=tf.constant(np.load(images)))
    np.savez(output, **{name: tensor.numpy() for name, tensor in outputs.items()})


if __name__ == "__main__":
    main(*sys.argv[1:4])
