"""The small library the course's notebooks call: one module per concern.

Import the module you need (`from helpers import data, report`); nothing heavy is imported here.
"""

import os

# TensorFlow prints pages of C++ start-up logs (CPU features, oneDNN notes) that teach nothing;
# keep its warnings and errors. Must be set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
