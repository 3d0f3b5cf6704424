"""An MLServer runtime serving streamapp's DigitModel: a peer for the client tests.

Reads: Open Inference Protocol v2 requests, decoded by MLServer's NumpyCodec.
Writes: outputs ``digit`` (INT64) and ``probabilities`` (FP32 [B, 10]) as
MLServer's NumpyCodec encodes them: the 1-D digits come out shaped [B, 1].

Runs in ``.venv-mlserver`` (see ``setup_peers.sh``) with this folder on
``PYTHONPATH`` and ``"implementation": "mlserver_digits.DigitsRuntime"`` in
the model's ``model-settings.json``.
"""

from __future__ import annotations

import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse

from streamapp.errors import InvalidTensor
from streamapp.serving.model import DigitModel


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        # the bundled weights unless the test names a file (STREAMAPP_PEER_MODEL_PATH)
        self._model = DigitModel.load(os.environ.get("STREAMAPP_PEER_MODEL_PATH") or None, name=self.name)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        batch = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        try:
            proba = self._model.predict_proba(batch.reshape(len(batch), 28, 28))
        except (InvalidTensor, ValueError) as exc:
            raise MLServerError(str(exc), status_code=400) from exc
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output("digit", proba.argmax(axis=1).astype(np.int64)),
                NumpyCodec.encode_output("probabilities", proba),
            ],
        )
