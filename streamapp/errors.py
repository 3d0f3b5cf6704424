"""Typed errors, one per kind of failure the pipeline decides on.

Two families, because the pipeline treats them in opposite ways:

* ``BadInput`` and its subclasses: the input itself is unusable. The stage that
  meets it writes a dead-letter record with ``str(error)`` as the reason and
  moves on. Retrying would never help.
* ``DependencyDown``: S3 or the predictor did not answer properly. The stage
  retries with backoff and never acks the input before the work is done.
"""

from __future__ import annotations


class StreamappError(Exception):
    """Base of every error streamapp raises on purpose."""


# -- bad input: dead-lettered -------------------------------------------------


class BadInput(StreamappError):
    """The input cannot be processed; retrying will not change that."""

    #: short machine-readable kind, stored in the dead-letter record
    kind = "bad_input"


class InvalidEvent(BadInput):
    """A notification that is not JSON or not of any known schema."""

    kind = "invalid_event"


class BucketNotAllowed(BadInput):
    """A notification names a bucket the workers may not read (``STREAMAPP_SOURCE_BUCKETS``)."""

    kind = "bucket_not_allowed"


class KeyNotAllowed(BadInput):
    """An object key the archive cannot take: it would leave the archive prefix,
    holds control characters, or makes an archive key over S3's 1,024 bytes."""

    kind = "key_not_allowed"


class ObjectNotFound(BadInput):
    """The object (or its bucket) named by an event no longer exists."""

    kind = "object_not_found"


class ObjectTooLarge(BadInput):
    """The object is larger than ``STREAMAPP_MAX_OBJECT_BYTES``."""

    kind = "object_too_large"


class ImageError(BadInput):
    """Base of the errors about image content."""

    kind = "image_error"


class EmptyImage(ImageError):
    """Zero bytes, or an image with no ink on it (blank)."""

    kind = "empty_image"


class UndecodableImage(ImageError):
    """Bytes that OpenCV cannot decode: not an image, or truncated."""

    kind = "undecodable_image"


class ImageTooLarge(ImageError):
    """Width x height over the pixel limit, read from the header before decoding."""

    kind = "image_too_large"


class PredictorRejected(BadInput):
    """The predictor answered 4xx for an input: it will never accept it."""

    kind = "predictor_rejected"


class PredictorFailed(BadInput):
    """The predictor kept failing (5xx) on this input while it said it was ready
    and answered other inputs: the input, not the server, is the problem."""

    kind = "predictor_failed"


class ObjectAccessDenied(BadInput):
    """S3 kept refusing (403) this one object while it answered for its bucket:
    a policy, an encryption key the worker may not use, or a key the server
    cannot sign, not S3 being down."""

    kind = "object_access_denied"


class InvalidTensor(BadInput):
    """A tensor record whose payload is not a 28x28 float32 tensor."""

    kind = "invalid_tensor"


# -- dependency down: retried -------------------------------------------------


class DependencyDown(StreamappError):
    """A dependency (S3, predictor) failed in a way that may pass; retry later."""


class StorageUnavailable(DependencyDown):
    """S3 could not be reached, or answered 5xx / throttling / access denied.

    ``status`` is the HTTP status when S3 answered, None when it could not be
    reached at all.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PredictorUnavailable(DependencyDown):
    """The predictor could not be reached, or answered 5xx.

    ``status`` is the HTTP status when it answered, None when it could not be
    reached at all.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PredictorProtocolError(DependencyDown):
    """The predictor answered 2xx with a body of no known shape.

    Treated as a dependency fault (a misconfigured or incompatible predictor),
    so inputs wait for it to be fixed instead of being dead-lettered en masse.
    """
