"""Typed records for every topic the pipeline writes.

The events topic is the one exception: it carries the object store's own JSON
(MinIO, AWS S3 or EventBridge shapes, or garbage), so it is read as raw bytes
and parsed by :mod:`streamapp.pipeline.events` into :class:`ObjectRef` records; a typed
Faust model there would drop unparseable messages before we could
dead-letter them.

    s3-events (raw JSON) -> ObjectRef -> TensorRecord -> LabeledRecord
        -> archive and tally;   anything unusable -> DeadLetter
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Dict, List, Optional

import faust
import numpy as np

from streamapp.errors import InvalidTensor

#: the tensor every predictor receives: 28x28 float32, row-major
TENSOR_SHAPE = (28, 28)
_TENSOR_BYTES = 28 * 28 * 4


class ObjectRef(faust.Record, serializer="json"):
    """One object version in S3, as named by a notification."""

    bucket: str
    key: str
    etag: str = ""
    version_id: str = ""
    size: int = -1
    event_name: str = ""
    event_time: str = ""

    @property
    def path(self) -> str:
        """``bucket/key``: the Kafka key of every record about this object."""
        return f"{self.bucket}/{self.key}"

    @property
    def url(self) -> str:
        """``s3://bucket/key``, as pages and logs name the object (quote it: the key is untrusted)."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def identity(self) -> str:
        """The object *version*: an image is counted once per identity.

        A replayed record has the same identity and is not counted again; the
        same key written again with new content is a new image.
        """
        version = self.version_id or self.etag.strip('"')
        return f"{self.bucket}/{self.key}@{version}" if version else self.path


# ``timings`` (stage -> seconds) is a required field on purpose: Faust shares a
# mutable default between instances, which would mix the timings of concurrent
# images.


class TensorRecord(faust.Record, serializer="json"):
    """preprocess -> inference: a normalized 28x28 float32 tensor.

    The tensor travels as base64 of little-endian float32 bytes (4.2 KB)
    rather than a JSON list of 784 floats (~12 KB): it is 3x smaller and
    decodes with one ``np.frombuffer``.
    """

    image: ObjectRef
    tensor: str
    timings: Dict[str, float]
    received_at: float

    @classmethod
    def from_array(cls, image: ObjectRef, array: np.ndarray, *, timings: Dict[str, float], received_at: float) -> TensorRecord:
        if array.shape != TENSOR_SHAPE:
            raise InvalidTensor(f"tensor shape {array.shape}, expected {TENSOR_SHAPE}")
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        return cls(image=image, tensor=base64.b64encode(raw).decode("ascii"), timings=timings, received_at=received_at)

    def array(self) -> np.ndarray:
        """The tensor as a (28, 28) float32 array; ``InvalidTensor`` if malformed."""
        try:
            raw = base64.b64decode(self.tensor, validate=True)
        except (ValueError, TypeError) as exc:
            raise InvalidTensor(f"tensor is not base64: {exc}") from None
        if len(raw) != _TENSOR_BYTES:
            raise InvalidTensor(f"tensor has {len(raw)} bytes, expected {_TENSOR_BYTES}")
        array = np.frombuffer(raw, dtype="<f4").reshape(TENSOR_SHAPE)
        if not np.isfinite(array).all():
            raise InvalidTensor("tensor holds NaN or infinity")
        return array


class LabeledRecord(faust.Record, serializer="json"):
    """inference -> archive: the predicted digit of one image.

    ``confidence`` is the top class probability, None when the predictor sent
    no probabilities. Records written before it existed (still in the topic
    after an upgrade) get it from their probabilities when they are read, so
    a replayed old record is archived as a new one would be.
    """

    image: ObjectRef
    digit: int
    model: str
    timings: Dict[str, float]
    received_at: float
    probabilities: Optional[List[float]] = None
    confidence: Optional[float] = None

    def __post_init__(self) -> None:
        if self.confidence is None:
            self.confidence = top_confidence(self.probabilities)


def top_confidence(probabilities: Optional[Sequence[float]]) -> Optional[float]:
    """The highest of ``probabilities`` (the predicted class's), None when there are none."""
    return float(max(probabilities)) if probabilities else None


class DeadLetter(faust.Record, serializer="json"):
    """An input the pipeline could not process, and why.

    ``event`` holds the original message text when the failure is in the
    notification itself; ``image`` the object when it is about the object.
    """

    stage: str
    kind: str
    reason: str
    image: Optional[ObjectRef] = None
    event: Optional[str] = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    index: int = 0
    failed_at: float = 0.0

    @property
    def source(self) -> str:
        """Where the failed input sits in Kafka: the same for every replay of it."""
        return f"{self.topic}:{self.partition}:{self.offset}:{self.index}:{self.stage}"

    @classmethod
    def now(cls, **fields: object) -> DeadLetter:
        return cls(failed_at=time.time(), **fields)
