"""Settings: the environment -> one frozen ``Settings``, read once.

Every field names the environment variable it comes from. Kafka, web and
commit settings are Faust's own and are read by Faust from its documented
variables (``BROKER_URL``, ``WEB_PORT``, ``TOPIC_PARTITIONS``,
``BROKER_SESSION_TIMEOUT`` ...); they are not repeated here. S3 credentials
and region come from the standard botocore chain (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles ...) and are never
read or stored by streamapp itself.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

_PREFIX = "STREAMAPP_"


def _field(env: str, default: Any, doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "doc": doc})


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_value(env: str, annotation: str, raw: str) -> Any:
    """``raw`` from variable ``env`` as the field's type (its annotation, as
    written); ``ValueError`` naming the variable and the accepted forms."""
    kind = annotation.replace(" | None", "").strip()
    if kind == "str":
        return raw
    if kind == "bool":
        if raw.strip().lower() in _TRUE:
            return True
        if raw.strip().lower() in _FALSE:
            return False
        raise ValueError(f"{env}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
    if kind == "int":
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"{env}={raw!r}: expected a whole number, such as 8") from None
    if kind == "float":
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError(f"{env}={raw!r}: expected a number, such as 0.5") from None
        if not math.isfinite(value):
            raise ValueError(f"{env}={raw!r}: expected a finite number")
        return value
    raise TypeError(f"{env}: settings of type {annotation!r} are not supported")


def _overlaps(prefix: str, other: str) -> bool:
    """Whether keys under ``<prefix><digit>/`` can be keys under ``<other><digit>/``:
    the same prefix, or ``prefix`` inside one of ``other``'s digit folders."""
    if not prefix.startswith(other):
        return False
    rest = prefix[len(other) :]
    return rest == "" or (rest[1:2] == "/" and rest[0] in "0123456789")


@dataclasses.dataclass(frozen=True)
class Settings:
    # -- the app and its topics ---------------------------------------------
    app_id: str = _field("STREAMAPP_APP_ID", "streamapp", "Faust app id = Kafka consumer group and topic prefix for tables.")
    events_topic: str = _field("STREAMAPP_EVENTS_TOPIC", "s3-events", "Topic the object store publishes bucket notifications to.")
    tensors_topic: str = _field("STREAMAPP_TENSORS_TOPIC", "streamapp-tensors", "Intermediate topic: preprocessed 28x28 tensors.")
    labeled_topic: str = _field("STREAMAPP_LABELED_TOPIC", "streamapp-labeled", "Intermediate topic: predictions.")
    dead_letter_topic: str = _field("STREAMAPP_DEAD_LETTER_TOPIC", "streamapp-dead-letters", "Every input the pipeline cannot process, with the reason.")
    # -- S3 ------------------------------------------------------------------
    s3_endpoint_url: str | None = _field("AWS_ENDPOINT_URL_S3", None, "S3 endpoint (MinIO, nanio); unset means AWS. AWS_ENDPOINT_URL is honoured too.")
    s3_region: str | None = _field("AWS_REGION", None, "Region for request signing; AWS_DEFAULT_REGION is honoured too.")
    source_buckets: str = _field("STREAMAPP_SOURCE_BUCKETS", "images", "Comma-separated buckets the workers read images from; a notification naming another bucket is dead-lettered (bucket_not_allowed) with no S3 call. '*' allows any bucket.")
    archive_bucket: str = _field("STREAMAPP_ARCHIVE_BUCKET", "digits", "Bucket the archiver writes labelled images to.")
    archive_prefix: str = _field("STREAMAPP_ARCHIVE_PREFIX", "", "Key prefix inside the archive bucket: keys are <prefix><digit>/<original key>.")
    max_object_bytes: int = _field("STREAMAPP_MAX_OBJECT_BYTES", 10 * 1024 * 1024, "Larger objects are dead-lettered without reading their body.")
    max_pixels: int = _field("STREAMAPP_MAX_PIXELS", 40_000_000, "Images with more pixels (read from the header) are dead-lettered without decoding.")
    s3_max_denials: int = _field("STREAMAPP_S3_MAX_DENIALS", 3, "403 answers for one object, while S3 answers HeadBucket for its bucket, before the object is dead-lettered (object_access_denied) instead of waited for.")
    s3_max_connections: int = _field("STREAMAPP_S3_MAX_CONNECTIONS", 32, "Connection pool size of the one S3 client.")
    # -- preprocessing --------------------------------------------------------
    transform: str = _field("STREAMAPP_TRANSFORM", "mnist", "'mnist' (find, fit and centre the digit, for real photos) or 'kserve-sample' (the sample's gray/invert/resize).")
    preprocess_concurrency: int = _field("STREAMAPP_PREPROCESS_CONCURRENCY", 8, "Events downloaded and transformed at once per worker.")
    # -- predictor ------------------------------------------------------------
    predictor_url: str = _field("STREAMAPP_PREDICTOR_URL", "http://127.0.0.1:8080", "Base URL of the model server.")
    model_name: str = _field("STREAMAPP_MODEL_NAME", "mnist", "Model name in the predictor's URLs.")
    predictor_protocol: str = _field("STREAMAPP_PREDICTOR_PROTOCOL", "v2", "'v1' (KServe :predict) or 'v2' (Open Inference Protocol /infer).")
    predictor_binary: str = _field("STREAMAPP_PREDICTOR_BINARY", "auto", "v2 only: send tensors as raw bytes (the binary tensor data extension): 'auto' (ask the server once; JSON if it refuses), 'on' or 'off'.")
    predictor_timeout: float = _field("STREAMAPP_PREDICTOR_TIMEOUT", 10.0, "Seconds for one predictor request.")
    predictor_max_failures: int = _field("STREAMAPP_PREDICTOR_MAX_FAILURES", 5, "5xx answers to one batch, while the predictor says it is ready and answers a blank image, before the batch is split and its failing input dead-lettered.")
    batch_max_size: int = _field("STREAMAPP_BATCH_MAX_SIZE", 64, "A batch goes to the predictor when it holds this many tensors ...")
    batch_max_delay: float = _field("STREAMAPP_BATCH_MAX_DELAY", 0.02, "... or when its oldest tensor has waited this many seconds.")
    # -- archive --------------------------------------------------------------
    archive_concurrency: int = _field("STREAMAPP_ARCHIVE_CONCURRENCY", 8, "Archive copies in flight at once per worker.")
    review_below: float | None = _field("STREAMAPP_REVIEW_BELOW", None, "Unset or empty: off. A number in (0, 1]: an image whose top class probability is below it, or that came with no probabilities, is archived under <review prefix><digit>/<original key> instead and counted apart, for a person to check.")
    review_prefix: str = _field("STREAMAPP_REVIEW_PREFIX", "review/", "Key prefix inside the archive bucket for images held for review (STREAMAPP_REVIEW_BELOW); must not overlap <STREAMAPP_ARCHIVE_PREFIX><digit>/.")
    # -- retries --------------------------------------------------------------
    retry_initial: float = _field("STREAMAPP_RETRY_INITIAL", 0.2, "First backoff, seconds, when S3 or the predictor is down.")
    retry_max: float = _field("STREAMAPP_RETRY_MAX", 10.0, "Longest backoff, seconds; retries go on until the dependency is back.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``), converting types."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None and f.name == "s3_endpoint_url":
                raw = env.get("AWS_ENDPOINT_URL")
            if raw is None and f.name == "s3_region":
                raw = env.get("AWS_DEFAULT_REGION")
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(f.metadata["env"], str(f.type), raw)
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def allowed_buckets(self) -> frozenset[str] | None:
        """The buckets of ``STREAMAPP_SOURCE_BUCKETS``; None when any is allowed."""
        names = [name.strip() for name in self.source_buckets.split(",")]
        return None if "*" in names else frozenset(names)

    @property
    def review_prefix_in_use(self) -> str | None:
        """``review_prefix`` while review is on (``STREAMAPP_REVIEW_BELOW`` set), else None."""
        return None if self.review_below is None else self.review_prefix

    def validate(self) -> None:
        if not all(name.strip() for name in self.source_buckets.split(",")):
            raise ValueError(f"STREAMAPP_SOURCE_BUCKETS={self.source_buckets!r}: comma-separated bucket names, or '*'")
        if self.transform not in ("mnist", "kserve-sample"):
            raise ValueError(f"STREAMAPP_TRANSFORM={self.transform!r}: expected 'mnist' or 'kserve-sample'")
        if self.predictor_protocol not in ("v1", "v2"):
            raise ValueError(f"STREAMAPP_PREDICTOR_PROTOCOL={self.predictor_protocol!r}: expected 'v1' or 'v2'")
        if self.predictor_binary not in ("auto", "on", "off"):
            raise ValueError(f"STREAMAPP_PREDICTOR_BINARY={self.predictor_binary!r}: expected 'auto', 'on' or 'off'")
        fields = {f.name: f.metadata["env"] for f in dataclasses.fields(self)}
        for name in ("batch_max_size", "preprocess_concurrency", "archive_concurrency", "max_object_bytes", "max_pixels",
                     "s3_max_connections", "predictor_max_failures", "s3_max_denials"):
            if getattr(self, name) < 1:
                raise ValueError(f"{fields[name]}={getattr(self, name)!r}: must be >= 1")
        for name in ("batch_max_delay", "retry_initial"):
            if getattr(self, name) < 0:
                raise ValueError(f"{fields[name]}={getattr(self, name)!r}: must be >= 0")
        for name in ("predictor_timeout", "retry_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{fields[name]}={getattr(self, name)!r}: must be > 0")
        if self.review_below is not None:
            # written "not (0 < x <= 1)" so that NaN is refused too
            if not 0 < self.review_below <= 1:
                raise ValueError(f"STREAMAPP_REVIEW_BELOW={self.review_below!r}: expected a probability in (0, 1], "
                                 "such as 0.5, or empty for off")
            if _overlaps(self.review_prefix, self.archive_prefix) or _overlaps(self.archive_prefix, self.review_prefix):
                raise ValueError(f"STREAMAPP_REVIEW_PREFIX={self.review_prefix!r}: its <digit>/ folders would mix "
                                 f"with the archive's (STREAMAPP_ARCHIVE_PREFIX={self.archive_prefix!r})")

    @classmethod
    def documentation(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting: the README table is made from this."""
        return [(f.metadata["env"], repr(f.default), f.metadata["doc"]) for f in dataclasses.fields(cls)]
