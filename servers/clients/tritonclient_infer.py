"""NVIDIA's stock Open Inference Protocol client, tritonclient.http, against any server that speaks the protocol.

    python tritonclient_infer.py HOST:PORT IMAGES.npy OUT.npz json,binary

Sends the float32 images (N, 1, 28, 28) to model `mnist` in requests of 32 images, once per mode (json: tensors as
JSON numbers both ways; binary: the binary tensor extension both ways) and saves each mode's logits in OUT.npz.
It runs in Triton's venv, where tritonclient is installed (its pins clash with the course's: ml-dtypes, greenlet).
"""

import sys

import numpy as np
import tritonclient.http as httpclient

address, images_file, out_file, modes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
images = np.load(images_file)
client = httpclient.InferenceServerClient(url=address, network_timeout=60)
results = {}
for mode in modes:
    binary = mode == "binary"
    parts = []
    for start in range(0, len(images), 32):
        x = images[start:start + 32]
        tensor = httpclient.InferInput("images", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        answer = client.infer("mnist", [tensor], outputs=[httpclient.InferRequestedOutput("logits", binary_data=binary)])
        parts.append(answer.as_numpy("logits"))
    results[mode] = np.concatenate(parts)
client.close()
np.savez(out_file, **results)
