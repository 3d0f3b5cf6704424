"""KServe's own ModelServer serving streamapp's DigitModel: a peer for the client tests.

Reads: KServe v1 ``:predict`` and v2 ``/infer`` requests (KServe decodes them).
Writes: the answers KServe's ModelServer makes of what ``predict`` returns.

Runs in ``.venv-kserve`` (see ``setup_peers.sh``), never in the app's venv:
``.venv-kserve/bin/python tests/serving/peers/kserve_digits.py --http_port 8080 --enable_grpc false``.
KServe parses its own arguments from ``sys.argv`` when ``kserve`` is imported.

Two models, so the client meets both answer shapes KServe servers give:

* ``mnist``: v1 ``{"predictions": [{"classes": d, "predictions": [10 probabilities]}]}``
  (the KServe sample's TensorFlow MNIST shape); v2 outputs ``digit`` INT64 [B]
  and ``probabilities`` FP32 [B, 10].
* ``mnist-classes``: v1 ``{"predictions": [d, ...]}`` (what KServe's sklearn
  server answers for a plain classifier); v2 one INT64 [B] output named
  ``output-0``, as KServe names unnamed outputs.
"""

from __future__ import annotations

import os
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from streamapp.errors import InvalidTensor
from streamapp.serving.model import DigitModel


class DigitsModel(kserve.Model):
    def __init__(self, name: str, digit_model: DigitModel, *, classes_only: bool) -> None:
        super().__init__(name)
        self.digit_model = digit_model
        self.classes_only = classes_only
        self.ready = True

    def _proba(self, batch: Any) -> np.ndarray:
        try:
            array = np.asarray(batch, dtype=np.float32)
            return self.digit_model.predict_proba(array.reshape(len(array), 28, 28))
        except (InvalidTensor, ValueError) as exc:  # a bad shape or NaN: the request's fault, so 400
            raise InvalidInput(str(exc)) from exc

    def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None) -> dict | InferResponse:
        if isinstance(payload, InferRequest):
            proba = self._proba(payload.inputs[0].as_numpy())
            digits = proba.argmax(axis=1).astype(np.int64)
            if self.classes_only:
                outputs = [InferOutput("output-0", list(digits.shape), "INT64", digits.tolist())]
            else:
                outputs = [
                    InferOutput("digit", list(digits.shape), "INT64", digits.tolist()),
                    InferOutput("probabilities", list(proba.shape), "FP32", proba.ravel().tolist()),
                ]
            return InferResponse(payload.id, self.name, outputs)
        proba = self._proba(payload["instances"])
        digits = proba.argmax(axis=1)
        if self.classes_only:
            return {"predictions": digits.tolist()}
        return {"predictions": [{"classes": int(d), "predictions": p.tolist()} for d, p in zip(digits, proba, strict=True)]}


if __name__ == "__main__":
    # the bundled weights unless the test names a file (STREAMAPP_PEER_MODEL_PATH)
    model = DigitModel.load(os.environ.get("STREAMAPP_PEER_MODEL_PATH") or None)
    kserve.ModelServer().start(
        [DigitsModel("mnist", model, classes_only=False), DigitsModel("mnist-classes", model, classes_only=True)]
    )
