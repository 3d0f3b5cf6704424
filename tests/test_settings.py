"""Settings from the environment: defaults, strict parsing, documentation."""

from __future__ import annotations

import dataclasses
import re

import pytest

from streamapp.settings import Settings, parse_value


def test_settings_defaults_and_env_types():
    s = Settings.from_env({})
    assert s.events_topic == "s3-events" and s.archive_bucket == "digits" and s.archive_prefix == ""
    s = Settings.from_env(
        {"STREAMAPP_BATCH_MAX_SIZE": "7", "STREAMAPP_BATCH_MAX_DELAY": "0.25", "STREAMAPP_PREDICTOR_PROTOCOL": "v1"}
    )
    assert (s.batch_max_size, s.batch_max_delay, s.predictor_protocol) == (7, 0.25, "v1")


def test_settings_read_the_standard_aws_variables():
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (s.s3_endpoint_url, s.s3_region) == ("http://minio:9000", "eu-west-1")
    # the S3-specific endpoint wins over the general one, as in botocore
    s = Settings.from_env({"AWS_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL_S3": "http://b"})
    assert s.s3_endpoint_url == "http://b"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STREAMAPP_BATCH_MAX_SIZE", "many"),
        ("STREAMAPP_BATCH_MAX_SIZE", "0"),
        ("STREAMAPP_TRANSFORM", "sepia"),
        ("STREAMAPP_PREDICTOR_PROTOCOL", "v3"),
        ("STREAMAPP_MAX_OBJECT_BYTES", "-1"),
    ],
)
def test_settings_refuse_bad_values(name, value):
    with pytest.raises(ValueError, match=name.removeprefix("STREAMAPP_").lower() + "|" + name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("False", False), ("no", False),
     ("off", False)],
)
def test_bool_settings_read_the_usual_forms(raw, expected):
    assert parse_value("STREAMAPP_X", "bool", raw) is expected


@pytest.mark.parametrize(
    ("annotation", "raw", "says"),
    [
        ("bool", "maybe", "STREAMAPP_X='maybe': expected one of 1, true, yes, on, 0, false, no, off"),
        ("int", "1.5", "STREAMAPP_X='1.5': expected a whole number"),
        ("float", "fast", "STREAMAPP_X='fast': expected a number"),
        ("float", "nan", "STREAMAPP_X='nan': expected a finite number"),
    ],
)
def test_bad_setting_values_name_the_variable_and_the_accepted_forms(annotation, raw, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_value("STREAMAPP_X", annotation, raw)


@pytest.mark.parametrize(
    ("name", "value"),
    [("STREAMAPP_BATCH_MAX_DELAY", "-1"), ("STREAMAPP_PREDICTOR_TIMEOUT", "0"), ("STREAMAPP_RETRY_MAX", "-2"),
     ("STREAMAPP_S3_MAX_CONNECTIONS", "0")],
)
def test_settings_out_of_range_name_the_variable(name, value):
    with pytest.raises(ValueError, match=f"^{name}="):
        Settings.from_env({name: value})


def test_every_setting_reads_its_own_default_back():
    for field in dataclasses.fields(Settings):
        if field.default is not None:
            assert parse_value(field.metadata["env"], str(field.type), str(field.default)) == field.default


def test_settings_are_frozen_and_documented():
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.batch_max_size = 3  # type: ignore[misc]
    docs = Settings.documentation()
    assert len(docs) == len(vars(s)) and all(doc for _, _, doc in docs)
    assert not any("SECRET" in name or "ACCESS_KEY" in name for name, _, _ in docs)


# -- images held for review ---------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("", None), ("1", 1.0), ("1.0", 1.0), ("0.5", 0.5), (" 0.25 ", 0.25),
                                               ("1e-9", 1e-9)])
def test_review_below_is_off_when_unset_or_empty_else_a_probability(raw, expected):
    assert Settings.from_env({}).review_below is None
    settings = Settings.from_env({"STREAMAPP_REVIEW_BELOW": raw})
    assert settings.review_below == expected
    assert settings.review_prefix_in_use == (None if expected is None else "review/")


@pytest.mark.parametrize(("raw", "says"), [
    ("0", "STREAMAPP_REVIEW_BELOW=0.0: expected a probability in (0, 1]"),
    ("-0.5", "STREAMAPP_REVIEW_BELOW=-0.5: expected a probability in (0, 1]"),
    ("1.0001", "STREAMAPP_REVIEW_BELOW=1.0001: expected a probability in (0, 1]"),
    ("50", "STREAMAPP_REVIEW_BELOW=50.0: expected a probability in (0, 1]"),
    ("abc", "STREAMAPP_REVIEW_BELOW='abc': expected a number"),
    ("50%", "STREAMAPP_REVIEW_BELOW='50%': expected a number"),
    ("nan", "STREAMAPP_REVIEW_BELOW='nan': expected a finite number"),
    ("inf", "STREAMAPP_REVIEW_BELOW='inf': expected a finite number"),
])
def test_review_below_refuses_anything_but_a_probability_at_start_up(raw, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        Settings.from_env({"STREAMAPP_REVIEW_BELOW": raw})


def test_review_below_built_in_code_is_validated_too():
    with pytest.raises(ValueError, match="STREAMAPP_REVIEW_BELOW=nan"):
        Settings(review_below=float("nan")).validate()


@pytest.mark.parametrize(("archive", "review", "ok"), [
    ("", "review/", True),
    ("digits/", "review/", True),
    ("", "", False),  # the same folders (only in code: an empty variable means the default)
    ("labels/", "labels/", False),
    ("", "3/", False),  # review/<n>/ inside the archive's 3/
    ("", "7/held/", False),
    ("a/", "a/0/", False),
    ("review/5/", "review/", False),  # the archive inside review's 5/
    ("", "3", True),  # 3<n>/ is never <n>/: two characters before the slash
    ("", "10/", True),
    ("a/", "a/b/", True),
    ("a/b/", "a/", True),
])
def test_the_review_prefix_must_not_mix_its_folders_with_the_archive(archive, review, ok):
    settings = Settings(archive_prefix=archive, review_prefix=review, review_below=0.5)
    if ok:
        settings.validate()
    else:
        with pytest.raises(ValueError, match=r"^STREAMAPP_REVIEW_PREFIX="):
            settings.validate()
    # while review is off the review prefix is not used, so not refused
    dataclasses.replace(settings, review_below=None).validate()


def test_an_overlapping_review_prefix_is_refused_from_the_environment():
    with pytest.raises(ValueError, match=re.escape("STREAMAPP_REVIEW_PREFIX='labels/': its <digit>/ folders")):
        Settings.from_env({"STREAMAPP_ARCHIVE_PREFIX": "labels/", "STREAMAPP_REVIEW_PREFIX": "labels/",
                           "STREAMAPP_REVIEW_BELOW": "0.9"})
