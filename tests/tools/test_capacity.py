"""``streamapp capacity``: the computations (pure, from small hand-made bench figures),
the command on a bench JSON, and docs/SCALING.md, whose table must be the
script's output for the committed bench of record."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from streamapp import cli
from streamapp.embedded.notifications import minio_notification
from streamapp.pipeline.records import LabeledRecord, ObjectRef, TensorRecord
from streamapp.pipeline.state import image_entry
from streamapp.tools import capacity
from streamapp.tools.capacity import Assumptions, Measured

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
FIXTURE = Path(__file__).parent / "fixtures" / "bench-of-record.json"
FIXTURE_ARG = "tests/tools/fixtures/bench-of-record.json"  # as the doc's command names it
SCALING = ROOT / "docs" / "SCALING.md"


def bench(workers_ms: float = 10.0, predictor_ms: float = 2.0, batch_32: float = 400.0) -> dict:
    """A bench JSON with round figures: one worker core carries 100 images/s, 70 at 70%."""
    return {
        "pipeline": {
            "images_per_s": 80.0,
            "cpu_ms_per_image": {"workers": workers_ms, "s3_server": 4.0, "predictor": predictor_ms, "broker": 2.0},
        },
        "predictor": {"batch_32_images_per_s": batch_32},
        "settings": {"workers": 1, "partitions": 8},
    }


M = Measured.from_bench(bench())
A = Assumptions()
SWEEP = [10.0 * 1.5**i for i in range(30)]  # 10 .. ~1.3 million images/s


def test_a_rate_worked_by_hand():
    p = capacity.plan(1000, M, A)
    assert p.worker_cores == pytest.approx(1000 * 10 / 1000 / 0.7)  # 14.3
    assert p.workers_by_cpu == 15
    assert p.partitions == 48  # >= 2 x 15, next of 12, 24, 48
    # 15 workers on 48: the busiest holds 4 = 83/s > 70; 16 hold 3 each = 62.5/s
    assert (p.workers, p.busiest_partitions) == (16, 3)
    assert (p.keda_min, p.keda_max, p.lag_threshold) == (16, 48, 1400)  # 70/s x 20 s
    assert p.predictors == 4  # 1000 / (min(400, 500) x 0.7)
    assert p.predictors_max == 12  # 48 workers x 70/s / 280
    assert p.kafka_records_per_s == 4000
    assert p.kafka_mb_per_s_produced == pytest.approx(1000 * sum(capacity.RECORD_BYTES.values()) / 1e6)
    assert p.kafka_mb_per_s_replicated == pytest.approx(2 * p.kafka_mb_per_s_produced)
    assert p.partition_replicas == 6 * 48 * 3
    assert p.entries_per_year == 1000 * 365 * 86400
    assert p.table_gb_per_year == pytest.approx(p.entries_per_year * 130 / 1e9)
    assert p.busiest_worker_gb_per_year == pytest.approx(p.table_gb_per_year * 3 / 48 * 2)
    assert p.restore_s_after_a_year == pytest.approx(p.entries_per_year * 3 / 48 / 110_000)


def test_everything_grows_with_the_rate():
    plans = [capacity.plan(rate, M, A) for rate in SWEEP]
    for field in ("worker_cores", "workers_by_cpu", "partitions", "workers", "keda_max", "predictors",
                  "predictors_max", "s3_get_per_s_input_prefix", "s3_copy_per_s_busiest_archive_prefix",
                  "input_prefixes_needed", "kafka_mb_per_s_produced", "broker_cores", "entries_per_year"):
        values = [getattr(p, field) for p in plans]
        assert values == sorted(values), field
    assert plans[-1].workers > plans[0].workers
    passed = [len(p.limits_passed) for p in plans]
    assert passed == sorted(passed) and passed[0] == 0 and passed[-1] == len(capacity.limits(M, A))


@pytest.mark.parametrize("assumptions", [A, Assumptions(growth=1.0), Assumptions(growth=3.0, utilisation=0.5),
                                         Assumptions(cores_per_worker=2.0, min_workers=3)])
def test_partitions_cover_the_workers_and_keda_stops_at_them(assumptions):
    for rate in SWEEP:
        p = capacity.plan(rate, M, assumptions)
        assert p.workers_by_cpu >= assumptions.min_workers
        assert p.workers_by_cpu * assumptions.cores_per_worker >= p.worker_cores - 1e-9
        assert p.partitions >= p.workers >= p.workers_by_cpu
        assert p.partitions >= assumptions.growth * p.workers_by_cpu
        k = math.log2(p.partitions / capacity.PARTITION_BASE)
        assert k == int(k) >= 0, p.partitions
        assert p.keda_max == p.partitions and p.keda_min == p.workers
        # the busiest worker within the target utilisation, and one fewer would not be
        assert p.busiest_partitions * rate / p.partitions <= capacity.worker_rate(M, assumptions) * (1 + 1e-9)
        if p.workers > p.workers_by_cpu:
            fewer = capacity.busiest(p.partitions, p.workers - 1)
            assert fewer * rate / p.partitions > capacity.worker_rate(M, assumptions)
        assert p.predictors >= assumptions.min_predictors and p.predictors_max >= p.predictors


def test_s3_per_prefix_limits_are_passed_at_the_documented_rates():
    def s3_passed(rate, a=A):
        return [limit.name.split(":")[0] for limit in capacity.plan(rate, M, a).limits_passed if limit.kind == "S3"]

    assert s3_passed(3_400) == []
    assert s3_passed(3_600) == ["S3 PUT per prefix"]  # the uploads: 3,500 PUT/s on one input prefix
    assert s3_passed(5_600) == ["S3 PUT per prefix", "S3 GET per prefix"]
    assert capacity.plan(3_600, M, A).input_prefixes_needed == 2
    two = Assumptions(input_prefixes=2)
    assert s3_passed(7_000, two) == [] and s3_passed(7_100, two) == ["S3 PUT per prefix"]
    assert capacity.plan(7_000, M, two).s3_get_per_s_input_prefix == 3_500
    # the archive: ten digits/<n>/ prefixes, the busiest with a tenth of the copies
    assert "S3 COPY per prefix" not in s3_passed(34_000)
    assert s3_passed(36_000)[-1] == "S3 COPY per prefix"
    assert "S3 COPY per prefix" in s3_passed(18_000, Assumptions(busiest_digit_share=0.2))


def test_the_deployment_as_it_is_reaches_its_partitions_first():
    # one worker core carries 70/s at 70%: 8 partitions carry 560/s
    first = capacity.plan(600, M, A).limits_passed[0]
    assert first.name.startswith("8 partitions") and first.at == pytest.approx(560)
    assert capacity.plan(500, M, A).limits_passed == []
    assert capacity.plan(500, M, A).next_limit == first
    now = capacity.deployment_now(M, A)
    assert now["floor_rate"] == pytest.approx(140) and now["lag_threshold_s"] == pytest.approx(2000 / 70)
    assert now["hpa_replica_rate"] == pytest.approx(0.7 * 1.0 * 1000 / 2)  # 70% of a one-core request


def test_the_table_has_a_column_per_rate_and_a_row_per_figure():
    plans = [capacity.plan(rate, M, A) for rate in capacity.RATES]
    assert [p.rate for p in plans] == [100, 1_000, 10_000]
    text = capacity.render(plans, M, A, "bench.json")
    table = [line for line in text.splitlines() if line.startswith("| | ")]
    assert table == ["| | 100 images/s | 1,000 images/s | 10,000 images/s |"]
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.count("|") == 5]
    assert len(rows) >= 20 and all(len(row.split(" | ")) == 4 for row in rows)
    assert any(row.startswith("| first limit reached") for row in rows)


def test_assumptions_are_checked():
    for bad in ({"utilisation": 0}, {"utilisation": 1.5}, {"growth": 0.5}, {"input_prefixes": 0}):
        with pytest.raises(ValueError):
            Assumptions(**bad)
    with pytest.raises(ValueError):
        capacity.plan(0, M, A)


def test_num_keeps_three_significant_figures():
    assert [capacity.num(x) for x in (0, 0.8178, 8.178, 81.78, 817.8, 8178.0, 3.1536e9)] == [
        "0", "0.818", "8.18", "81.8", "818", "8,180", "3,150,000,000"]
    assert [capacity.duration(s) for s in (30, 600, 14_335, 214_748)] == ["30.0 s", "10.0 min", "3.98 h", "2.49 days"]


def test_a_state_section_gives_the_restore_rate():
    results = bench()
    results["state"] = [{"entries": 0, "fresh_worker_recovery_records_per_s": None},
                        {"entries": 1_000_000, "fresh_worker_recovery_records_per_s": 139_587.0},
                        {"entries": 100_000, "fresh_worker_recovery_records_per_s": 90_000.0}]
    measured = Measured.from_bench(results)
    assert measured.restore_records_per_s == 139_587.0
    p = capacity.plan(100, measured, A)
    assert p.restore_s_after_a_year == pytest.approx(p.entries_per_year * p.busiest_partitions / p.partitions / 139_587)
    assert M.restore_records_per_s is None


def test_the_defaults_are_the_deployment_as_it_is():
    def one(name: str, kind: str) -> dict:
        docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == kind]
        assert len(docs) == 1
        return docs[0]

    scaled = one("worker-scaledobject.yaml", "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (A.min_workers, A.partitions_now)
    assert int(trigger["metadata"]["lagThreshold"]) == A.lag_threshold_now
    assert int(one("configmap.yaml", "ConfigMap")["data"]["TOPIC_PARTITIONS"]) == A.partitions_now
    hpa = one("predictor-hpa.yaml", "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (A.min_predictors, A.predictor_max_now)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == A.utilisation * 100
    (container,) = one("predictor.yaml", "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] == f"{A.predictor_request_now * 1000:g}m"
    (claim,) = one("worker.yaml", "StatefulSet")["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == f"{A.worker_volume_gib:g}Gi"
    topics = [d for d in yaml.safe_load_all((K8S / "kafka-topics.yaml").read_text()) if d]
    assert {d["spec"]["replicas"] for d in topics} == {A.replication_factor}
    assert {d["spec"]["partitions"] for d in topics} == {A.partitions_now}


def test_record_sizes_are_the_pipelines_encodings():
    """RECORD_BYTES (key + value) against the records as the pipeline writes them, within 15%."""
    ref = ObjectRef(bucket="images", key="uploads/2026/12/04/digit-000123.png",
                    etag='"0123456789abcdef0123456789abcdef"', size=712, event_name="s3:ObjectCreated:Put",
                    event_time="2026-12-04T10:00:00.123Z")
    key = ref.path.encode()
    _, event = minio_notification(ref)
    tensor = TensorRecord.from_array(ref, np.random.default_rng(0).random((28, 28), dtype=np.float32),
                                     timings={"s3_get": 0.006095493999964674, "transform": 0.0013711069999544634},
                                     received_at=1796378400.1234567)
    probabilities = np.random.default_rng(1).dirichlet(np.ones(10)).astype(np.float32)
    labeled = LabeledRecord(image=ref, digit=3, model="mnist", received_at=tensor.received_at,
                            timings={**tensor.timings, "batch_wait": 0.02953040599822998,
                                     "predict": 0.0074549844999864945},
                            probabilities=[float(p) for p in probabilities],
                            confidence=float(probabilities.max()))
    entry = json.dumps(image_entry(3, float(probabilities.max()), review=False)).encode()
    actual = {
        "event": len(key) + len(event),
        "tensor": len(key) + len(tensor.dumps()),
        "labeled": len(key) + len(labeled.dumps()),
        "changelog": len(json.dumps(ref.identity).encode()) + len(entry),  # images[bucket/key@etag] = entry
    }
    for name, size in actual.items():
        assert abs(size - capacity.RECORD_BYTES[name]) <= 0.15 * capacity.RECORD_BYTES[name], (name, actual)


def flat_keys(tree: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in tree.items():
        keys |= flat_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return keys


def test_the_fixture_holds_only_what_the_script_reads():
    assert flat_keys(json.loads(FIXTURE.read_text())) == set(capacity.BENCH_KEYS)
    assert flat_keys(bench()) == set(capacity.BENCH_KEYS)


def test_the_command_reads_a_bench_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench()))
    assert cli.main(["capacity", str(path), "--rate", "50", "500", "--utilisation", "0.5"]) == 0
    text = capsys.readouterr().out
    assert "| | 50 images/s | 500 images/s |" in text
    assert "| worker CPU, cores at 50% | 1.00 | 10.0 |" in text

    assert cli.main(["capacity", str(path), "--rate", "50", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert [p["rate"] for p in figures["plans"]] == [50]
    assert figures["plans"][0]["workers"] == 2 and figures["assumptions"]["utilisation"] == 0.7

    path.write_text(json.dumps({"pipeline": {}}))
    assert cli.main(["capacity", str(path)]) == 1
    assert "KeyError" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:
        cli.main(["capacity", "--help"])
    assert exit_.value.code == 0
    assert "--partitions-now" in capsys.readouterr().out


# -- docs/SCALING.md -----------------------------------------------------------------

BLOCK = re.compile(r"<!-- capacity-table -->\n(.*?)<!-- /capacity-table -->", re.DOTALL)


def of_record() -> str:
    measured = Measured.from_bench(json.loads(FIXTURE.read_text()))
    return capacity.render([capacity.plan(rate, measured, A) for rate in capacity.RATES], measured, A, FIXTURE_ARG)


def test_the_docs_table_is_the_scripts_output_for_the_bench_of_record():
    doc = SCALING.read_text(encoding="utf-8")
    assert f"streamapp capacity {FIXTURE_ARG}" in doc
    (block,) = BLOCK.findall(doc)
    expected = of_record()
    if block.strip() != expected.strip():
        print(expected)  # shown by pytest on failure: paste it into docs/SCALING.md
    assert block.strip() == expected.strip()


#: numbers the doc's text may quote that are not in the script's output, with where they come from
CITED = {
    "110": "docs/BENCHMARKS.md, State: the bulk restore's 110-150k records/s",
    "150": "docs/BENCHMARKS.md, State: the bulk restore's 110-150k records/s",
}
#: a number as the doc and the script write it: 3, 0.818, 2,400, 10,000
NUMBER = re.compile(r"(?<![\w.,])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w]|,\d)")


def test_every_number_in_the_docs_text_is_the_scripts_or_cited():
    """So the text cannot drift from the table: a number outside it must be in it (or cited above)."""
    doc = SCALING.read_text(encoding="utf-8")
    text = BLOCK.sub("", doc)
    # commands and paths, links, the bench's date
    text = re.sub(r"```.*?```|`[^`\n]*`|\]\([^)]*\)|\d{4}-\d{2}-\d{2}", "", text, flags=re.DOTALL)
    quoted = set(NUMBER.findall(text))
    assert {"978", "3,500", "45.9", "16.4"} <= quoted  # the check sees the text's figures
    unknown = sorted(quoted - set(NUMBER.findall(of_record())) - set(CITED))
    assert unknown == [], unknown
