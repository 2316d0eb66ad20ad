"""A custom MLServer inference runtime: chapter 04's ONNX export in ONNX Runtime, on the CPU.

MLServer calls `load()` once per inference worker and `predict()` for every (adaptively batched) request. Requests and
answers are the Open Inference Protocol's JSON tensors; MLServer's NumpyCodec turns them into numpy arrays and back.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

INPUT, OUTPUT = "images", "logits"
IMAGE = (1, 28, 28)  # one image in the model's layout; a request holds (N, 1, 28, 28)


class OnnxMnist(MLModel):
    async def load(self) -> bool:
        path = await get_model_uri(self._settings, wellknown_filenames=["model.onnx"])
        options = ort.SessionOptions()  # the course's setting: 1 thread inside an operator, 1 across operators
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        request_input = next((i for i in payload.inputs if i.name == INPUT), None)
        if request_input is None:
            raise InferenceError(f"the request has no input named {INPUT!r}")
        if request_input.datatype != "FP32" or tuple(request_input.shape[1:]) != IMAGE:
            raise InferenceError(f"{INPUT!r} must be FP32 of shape [N, 1, 28, 28], "
                                 f"not {request_input.datatype} {request_input.shape}")
        try:
            images = NumpyCodec.decode_input(request_input)
        except ValueError as error:  # the data does not fill the shape
            raise InferenceError(f"{INPUT!r}: {error}") from error
        logits = self._session.run([OUTPUT], {INPUT: np.ascontiguousarray(images, np.float32)})[0]
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 outputs=[NumpyCodec.encode_output(OUTPUT, logits)])
