"""The digit classifier, served with numpy alone (no torch at serving time).

Reads: a weights file (``.npz``) written by ``tools/train_digits.py``; by
default the one bundled at ``streamapp/assets/digits-model.npz``.
Writes: nothing. ``DigitModel.predict_proba`` maps a batch of 28x28 tensors
(float32 in [0, 1], white ink on black, as :mod:`streamapp.imaging.tensor` makes
them) to class probabilities.

File layout (all arrays float32, BatchNorm already folded into the weights):

* ``meta``: a JSON string: ``architecture`` (a list of layers, run in order),
  ``nets`` (the ensemble size), held-out accuracy, training seed, data hash.
* ``net{i}.{layer}.w`` / ``.b``: conv weights as (kh, kw, c_in, c_out), dense
  weights as (n_in, n_out) with the inputs in NHWC flatten order.

The ensemble's output is the mean of its nets' softmax outputs.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from importlib import resources
from typing import Any

import numpy as np

from streamapp.errors import InvalidTensor

logger = logging.getLogger(__name__)

ASSET = "digits-model.npz"
#: images per im2col chunk: the largest temporary (~11 MB) stays near the
#: caches; measured 1.4x faster than 64 at batch 128, the same at batch 8
_CHUNK = 16


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Stride-1 convolution of NHWC ``x`` with (kh, kw, c_in, c_out) ``w``.

    im2col as kh*kw shifted copies laid side by side on the channel axis: each
    copy moves whole channel rows, which is several times faster than
    reshaping a sliding-window view whose innermost axes are the tiny kernel.
    """
    kh, kw, c_in, c_out = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    batch, height, width = x.shape[0], x.shape[1] - kh + 1, x.shape[2] - kw + 1
    cols = np.empty((batch, height, width, kh * kw * c_in), dtype=np.float32)
    for dy in range(kh):
        for dx in range(kw):
            start = (dy * kw + dx) * c_in
            cols[..., start : start + c_in] = x[:, dy : dy + height, dx : dx + width, :]
    out = cols.reshape(-1, kh * kw * c_in) @ w.reshape(kh * kw * c_in, c_out)
    out += b
    return out.reshape(batch, height, width, c_out)


def _maxpool(x: np.ndarray, size: int) -> np.ndarray:
    batch, height, width, chans = x.shape
    h, w = height // size, width // size
    x = x[:, : h * size, : w * size, :].reshape(batch, h, size, w, size, chans)
    return x.max(axis=(2, 4))


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def forward(arch: list[dict[str, Any]], weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Logits of one net for NHWC float32 ``x``; pure, allocates only temporaries."""
    for layer in arch:
        op = layer["op"]
        if op == "conv":
            x = _conv(x, weights[layer["name"] + ".w"], weights[layer["name"] + ".b"], layer.get("pad", 0))
        elif op == "relu":
            x = np.maximum(x, 0.0)  # not in place: x may be the caller's array
        elif op == "maxpool":
            x = _maxpool(x, layer["size"])
        elif op == "flatten":
            x = x.reshape(len(x), -1)
        elif op == "dense":
            x = x @ weights[layer["name"] + ".w"] + weights[layer["name"] + ".b"]
        else:  # the loader checks ops, so this is a bug, not bad input
            raise AssertionError(f"unknown layer op {op!r}")
    return x


_OPS = {"conv", "relu", "maxpool", "flatten", "dense"}


class DigitModel:
    """An ensemble of small CNNs over 28x28 MNIST-style tensors.

    Immutable after ``load``: the weight arrays are read-only and
    ``predict_proba`` keeps no state, so one instance serves many threads.
    """

    name: str
    version: str

    def __init__(self, name: str, version: str, meta: dict[str, Any], nets: list[dict[str, np.ndarray]]) -> None:
        self.name = name
        self.version = version
        self.meta = meta
        self._arch: list[dict[str, Any]] = meta["architecture"]
        self._nets = nets

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, name: str = "mnist") -> DigitModel:
        """Load a weights file; ``None`` loads the bundled model."""
        if path is None:
            raw = resources.files("streamapp").joinpath("assets", ASSET).read_bytes()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
        # the version names the exact weights, so a result can be traced to them
        version = hashlib.sha256(raw).hexdigest()[:12]
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        meta = json.loads(str(arrays.pop("meta")))
        unknown = {layer["op"] for layer in meta["architecture"]} - _OPS
        if unknown:
            raise ValueError(f"weights file uses unknown layer ops {sorted(unknown)}")
        nets = []
        for index in range(int(meta["nets"])):
            prefix = f"net{index}."
            weights = {
                key[len(prefix):]: np.ascontiguousarray(value, dtype=np.float32)
                for key, value in arrays.items()
                if key.startswith(prefix)
            }
            for value in weights.values():
                value.flags.writeable = False
            nets.append(weights)
        logger.info("loaded model %s version %s (%d nets)", name, version, len(nets))
        return cls(name, version, meta, nets)

    def predict_proba(self, batch: np.ndarray) -> np.ndarray:
        """(B, 28, 28) or (B, 784) float32 in [0, 1] -> (B, 10) float32 probabilities."""
        x = np.asarray(batch, dtype=np.float32)
        if (x.ndim == 2 and x.shape[1] == 784) or (x.ndim == 3 and x.shape[1:] == (28, 28)):
            x = x.reshape(len(x), 28, 28, 1)
        else:
            raise InvalidTensor(f"batch shape {x.shape}, expected (B, 28, 28) or (B, 784)")
        if not np.isfinite(x).all():
            raise InvalidTensor("batch holds NaN or infinity")
        out = np.zeros((len(x), 10), dtype=np.float32)
        # chunks bound the im2col temporaries; every image still sees the same math
        for start in range(0, len(x), _CHUNK):
            part = x[start : start + _CHUNK]
            for weights in self._nets:
                out[start : start + _CHUNK] += _softmax(forward(self._arch, weights, part))
        out /= len(self._nets)
        return out

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B,) int64 most likely digits."""
        return self.predict_proba(batch).argmax(axis=1)
