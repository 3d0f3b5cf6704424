"""``streamapp capacity``: what a target rate needs, on paper, from a bench's measured costs.

Reads: a ``streamapp bench --json`` file, only the keys in :data:`BENCH_KEYS`
(a pipeline-only run is enough; a state section, when present, gives the
restore rate). Writes: the plan as markdown on stdout, or as JSON (``--json``).

For each target rate: worker cores, workers, partitions, the KEDA bounds,
predictor replicas, S3 requests per prefix, the broker's records and bytes,
the state's growth and restore time, and the limits reached on the way to
that rate. The method and the table of record: docs/SCALING.md. Everything
but :func:`main` is a pure function of the bench's figures and the
:class:`Assumptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: images/s the table of record (docs/SCALING.md) is made for
RATES = (100.0, 1_000.0, 10_000.0)

#: what Amazon S3 serves per second per partitioned prefix, at least: "Best
#: practices design patterns: optimizing Amazon S3 performance",
#: https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html
S3_GET_PER_PREFIX = 5_500  # GET/HEAD
S3_PUT_PER_PREFIX = 3_500  # PUT/COPY/POST/DELETE

#: bytes of one Kafka record (key + value) as the pipeline writes it, per image:
#: MinIO's notification, the tensor (base64 float32 in JSON), the label with
#: its ten probabilities, the images table's changelog entry ({digit, confidence}); for a 35-character
#: key. tests/tools/test_capacity.py checks them against the real encodings.
RECORD_BYTES = {"event": 1_100, "tensor": 4_700, "labeled": 800, "changelog": 110}

#: topics of TOPIC_PARTITIONS partitions each: events, tensors, labeled, dead
#: letters, and the changelogs of the two tables
TOPICS = 6

#: partition counts are 12 x 2^k: each divides evenly among 1, 2, 3, 4, 6 and
#: 12 workers (times the power of 2), and a step doubles
PARTITION_BASE = 12

SECONDS_PER_YEAR = 365 * 24 * 3600

#: the bench JSON's keys this reads (dotted); "state" is optional
BENCH_KEYS = (
    "pipeline.images_per_s",
    "pipeline.cpu_ms_per_image.workers",
    "pipeline.cpu_ms_per_image.s3_server",
    "pipeline.cpu_ms_per_image.predictor",
    "pipeline.cpu_ms_per_image.broker",
    "predictor.batch_32_images_per_s",
    "settings.workers",
    "settings.partitions",
)


@dataclass(frozen=True)
class Measured:
    """The bench's figures: CPU ms per image of each process, the predictor's throughput."""

    images_per_s: float
    workers_ms: float
    s3_server_ms: float
    predictor_ms: float
    broker_ms: float
    predictor_batch_32_per_s: float
    bench_workers: int
    bench_partitions: int
    #: a fresh worker's bulk restore, from the bench's state section if it has one
    restore_records_per_s: float | None = None

    @classmethod
    def from_bench(cls, results: Mapping[str, Any]) -> Measured:
        cpu = results["pipeline"]["cpu_ms_per_image"]
        restore = None
        levels = sorted(results.get("state") or [], key=lambda level: level.get("entries", 0))
        rates = [level.get("fresh_worker_recovery_records_per_s") for level in levels]
        if rates and rates[-1]:
            restore = float(rates[-1])  # the largest level: the least start-up in the figure
        return cls(
            images_per_s=float(results["pipeline"]["images_per_s"]),
            workers_ms=float(cpu["workers"]),
            s3_server_ms=float(cpu["s3_server"]),
            predictor_ms=float(cpu["predictor"]),
            broker_ms=float(cpu["broker"]),
            predictor_batch_32_per_s=float(results["predictor"]["batch_32_images_per_s"]),
            bench_workers=int(results["settings"]["workers"]),
            bench_partitions=int(results["settings"]["partitions"]),
            restore_records_per_s=restore,
        )


def _opt(default: Any, text: str) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Assumptions:
    """What the bench does not measure; each is a ``streamapp capacity`` option."""

    utilisation: float = _opt(0.7, "target CPU utilisation of a worker or predictor core")
    cores_per_worker: float = _opt(1.0, "cores one worker uses: a Faust worker is one Python process")
    growth: float = _opt(2.0, "partitions >= this x workers: the count is fixed when the topics are made")
    min_workers: int = _opt(2, "the workers' floor: a standby of every table partition on another worker")
    min_predictors: int = _opt(2, "the predictors' floor: one can go on a drain")
    catch_up_s: float = _opt(20.0, "KEDA lagThreshold = this many seconds of one worker's work")
    input_prefixes: int = _opt(1, "S3 prefixes the input keys are spread over (the uploader's layout)")
    busiest_digit_share: float = _opt(0.1, "share of images in the busiest digits/<n>/ archive prefix")
    bytes_per_entry: float = _opt(130.0, "bytes per images-table entry in RocksDB (key bucket/key@etag, value {digit, confidence})")
    restore_records_per_s: float = _opt(
        110_000.0, "bulk restore rate if the bench JSON has no state section (docs/BENCHMARKS.md: 110-150k)")
    standby_replicas: int = _opt(1, "TABLE_STANDBY_REPLICAS")
    replication_factor: int = _opt(3, "replicas of every topic partition (kafka-topics.yaml)")
    # the deployment as it is (deploy/k8s), for the limits it reaches
    partitions_now: int = _opt(8, "TOPIC_PARTITIONS and KEDA maxReplicaCount now")
    lag_threshold_now: int = _opt(2000, "KEDA lagThreshold now")
    predictor_max_now: int = _opt(4, "predictor HPA maxReplicas now")
    predictor_request_now: float = _opt(1.0, "predictor CPU request now, cores: the HPA's target is a share of it")
    worker_volume_gib: float = _opt(2.0, "each worker's volume for its tables now, GiB")

    def __post_init__(self) -> None:
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], not {self.utilisation}")
        if self.growth < 1:
            raise ValueError(f"growth must be >= 1, not {self.growth}")
        if min(self.cores_per_worker, self.input_prefixes, self.busiest_digit_share, self.bytes_per_entry,
               self.restore_records_per_s, self.min_workers, self.min_predictors, self.catch_up_s) <= 0:
            raise ValueError("every size, rate and floor must be > 0")


@dataclass(frozen=True)
class Limit:
    """A limit and the images/s at which it is reached."""

    name: str
    at: float
    #: "deploy": the table's settings lift it; "S3": only the key layout does
    kind: str


@dataclass(frozen=True)
class Plan:
    """What one target rate needs."""

    rate: float
    worker_cores: float
    workers_by_cpu: int
    partitions: int
    workers: int
    busiest_partitions: int
    keda_min: int
    keda_max: int
    lag_threshold: int
    predictors: int
    predictors_max: int
    s3_get_per_s_input_prefix: float
    s3_put_per_s_input_prefix: float
    s3_copy_per_s_busiest_archive_prefix: float
    input_prefixes_needed: int
    s3_server_cores: float
    kafka_records_per_s: float
    kafka_mb_per_s_produced: float
    kafka_mb_per_s_consumed: float
    kafka_mb_per_s_replicated: float
    broker_cores: float
    partition_replicas: int
    entries_per_year: float
    table_gb_per_year: float
    busiest_worker_gb_per_year: float
    volume_full_days: float
    restore_s_after_a_year: float
    #: limits of the deployment as it is and of S3 passed below this rate, in the order reached
    limits_passed: list[Limit]
    #: the first limit above this rate
    next_limit: Limit | None


def _ceil(x: float) -> int:
    return math.ceil(round(x, 9))  # 8.000000001 from float noise is 8


def worker_rate(m: Measured, a: Assumptions) -> float:
    """Images/s one worker carries at the target utilisation."""
    return a.cores_per_worker * 1000 / m.workers_ms * a.utilisation


def predictor_rate(m: Measured, a: Assumptions) -> float:
    """Images/s one predictor replica (one process, one BLAS thread: ~one core) carries at the target.

    The lower of the bench's batch-32 calls (one client, one call at a time)
    and one core over the predictor's CPU per image in the pipeline.
    """
    return min(m.predictor_batch_32_per_s, 1000 / m.predictor_ms) * a.utilisation


def worker_cores(rate: float, m: Measured, a: Assumptions) -> float:
    return rate * m.workers_ms / 1000 / a.utilisation


def partitions_for(workers: int, a: Assumptions) -> int:
    """The first 12 x 2^k at or above ``growth`` x ``workers``."""
    partitions = PARTITION_BASE
    while partitions < workers * a.growth:
        partitions *= 2
    return partitions


def busiest(partitions: int, workers: int) -> int:
    """Partitions of the busiest worker: Kafka spreads them as evenly as it can."""
    return -(-partitions // workers)


def balanced_workers(rate: float, partitions: int, at_least: int, m: Measured, a: Assumptions) -> int:
    """The fewest workers (>= ``at_least``) whose busiest one stays within the target utilisation.

    Ends at ``partitions`` at the latest: there, one partition each carries
    ``rate / partitions``, at most ``worker_rate / growth``.
    """
    workers = at_least
    while workers < partitions and busiest(partitions, workers) * rate / partitions > worker_rate(m, a) * (1 + 1e-9):
        workers += 1
    return workers


def limits(m: Measured, a: Assumptions) -> list[Limit]:
    """The limits on the way up, lowest first: the deployment's as it is, and S3's per prefix."""
    found = [
        Limit(f"{a.partitions_now} partitions / KEDA max", a.partitions_now * worker_rate(m, a), "deploy"),
        Limit(f"predictor HPA max {a.predictor_max_now}", a.predictor_max_now * predictor_rate(m, a), "deploy"),
        Limit("S3 PUT per prefix: uploads to the input prefix", S3_PUT_PER_PREFIX * a.input_prefixes, "S3"),
        Limit("S3 GET per prefix: GetObject on the input prefix", S3_GET_PER_PREFIX * a.input_prefixes, "S3"),
        Limit("S3 COPY per prefix: the busiest digits/<n>/", S3_PUT_PER_PREFIX / a.busiest_digit_share, "S3"),
    ]
    return sorted(found, key=lambda limit: limit.at)


def plan(rate: float, m: Measured, a: Assumptions) -> Plan:
    """What ``rate`` images/s need, from the bench's figures ``m``."""
    if rate <= 0:
        raise ValueError(f"a rate must be > 0, not {rate}")
    cores = worker_cores(rate, m, a)
    by_cpu = max(a.min_workers, _ceil(cores / a.cores_per_worker))
    partitions = partitions_for(by_cpu, a)
    workers = balanced_workers(rate, partitions, by_cpu, m, a)
    most = busiest(partitions, workers)
    per_predictor = predictor_rate(m, a)
    predictors = max(a.min_predictors, _ceil(rate / per_predictor))
    # when KEDA runs a worker on every partition, the predictors must keep up with them
    predictors_max = max(predictors, _ceil(partitions * worker_rate(m, a) / per_predictor))
    produced = sum(RECORD_BYTES.values())
    consumed = RECORD_BYTES["event"] + RECORD_BYTES["tensor"] + RECORD_BYTES["labeled"]
    consumed += a.standby_replicas * RECORD_BYTES["changelog"]  # the standbys read the changelog
    entries = rate * SECONDS_PER_YEAR
    table_bytes = entries * a.bytes_per_entry
    busiest_bytes = table_bytes * most / partitions * (1 + a.standby_replicas)
    restore = m.restore_records_per_s or a.restore_records_per_s
    passed = [limit for limit in limits(m, a) if limit.at < rate]
    above = [limit for limit in limits(m, a) if limit.at >= rate]
    return Plan(
        rate=rate,
        worker_cores=cores,
        workers_by_cpu=by_cpu,
        partitions=partitions,
        workers=workers,
        busiest_partitions=most,
        keda_min=workers,
        keda_max=partitions,
        lag_threshold=max(100, int(round(worker_rate(m, a) * a.catch_up_s, -2))),
        predictors=predictors,
        predictors_max=predictors_max,
        s3_get_per_s_input_prefix=rate / a.input_prefixes,
        s3_put_per_s_input_prefix=rate / a.input_prefixes,
        s3_copy_per_s_busiest_archive_prefix=rate * a.busiest_digit_share,
        input_prefixes_needed=max(_ceil(rate / S3_PUT_PER_PREFIX), _ceil(rate / S3_GET_PER_PREFIX)),
        s3_server_cores=rate * m.s3_server_ms / 1000,
        kafka_records_per_s=rate * len(RECORD_BYTES),
        kafka_mb_per_s_produced=rate * produced / 1e6,
        kafka_mb_per_s_consumed=rate * consumed / 1e6,
        kafka_mb_per_s_replicated=rate * produced * (a.replication_factor - 1) / 1e6,
        broker_cores=rate * m.broker_ms / 1000,
        partition_replicas=TOPICS * partitions * a.replication_factor,
        entries_per_year=entries,
        table_gb_per_year=table_bytes / 1e9,
        busiest_worker_gb_per_year=busiest_bytes / 1e9,
        volume_full_days=a.worker_volume_gib * 2**30 / (busiest_bytes / 365),
        restore_s_after_a_year=entries * most / partitions / restore,
        limits_passed=passed,
        next_limit=above[0] if above else None,
    )


def deployment_now(m: Measured, a: Assumptions) -> dict[str, float]:
    """What deploy/k8s as it is carries, in images/s (and seconds for the lag threshold)."""
    hpa_replica_rate = a.utilisation * a.predictor_request_now * 1000 / m.predictor_ms
    return {
        "worker_rate": worker_rate(m, a),
        "max_rate": a.partitions_now * worker_rate(m, a),
        "floor_rate": a.min_workers * worker_rate(m, a),
        "lag_threshold_s": a.lag_threshold_now / worker_rate(m, a),
        "predictor_rate": predictor_rate(m, a),
        "predictor_max_rate": a.predictor_max_now * predictor_rate(m, a),
        "hpa_replica_rate": hpa_replica_rate,
        "hpa_at_max_rate": a.predictor_max_now * hpa_replica_rate,
    }


# -- output -----------------------------------------------------------------------


def num(x: float) -> str:
    """Three significant figures, thousands separated: 0.818, 8.18, 81.8, 818, 8,180."""
    if x == 0:
        return "0"
    digits = 2 - math.floor(math.log10(abs(x)))
    return f"{round(x, digits):,.{max(0, digits)}f}"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{num(seconds)} s"
    if seconds < 2 * 3600:
        return f"{num(seconds / 60)} min"
    if seconds < 2 * 86400:
        return f"{num(seconds / 3600)} h"
    return f"{num(seconds / 86400)} days"


def _limit(limit: Limit) -> str:
    return f"{limit.name}, at {num(limit.at)}/s"


def _rate(rate: float) -> str:
    return f"{rate:,.0f}" if rate == int(rate) else num(rate)


def _first_limit(p: Plan) -> str:
    if p.limits_passed:
        return _limit(p.limits_passed[0])
    return f"none (next: {_limit(p.next_limit)})" if p.next_limit else "none"


def render(plans: Sequence[Plan], m: Measured, a: Assumptions, source: str) -> str:
    """The plans as markdown: what was measured and assumed, the table, the deployment as it is."""
    util = f"{a.utilisation * 100:g}%"
    restore = m.restore_records_per_s or a.restore_records_per_s
    restore_from = "the bench's state section" if m.restore_records_per_s else "assumed"
    now = deployment_now(m, a)
    lines = [
        f"From `{source}`: {m.bench_workers} worker{'s' if m.bench_workers != 1 else ''}, "
        f"{m.bench_partitions} partitions, "
        f"{num(m.images_per_s)} images/s. CPU ms per image: workers {num(m.workers_ms)}, "
        f"S3 server {num(m.s3_server_ms)}, predictor {num(m.predictor_ms)}, broker {num(m.broker_ms)}; "
        f"predictor at batch 32: {num(m.predictor_batch_32_per_s)} images/s.",
        "",
        f"Per worker at {util} of {a.cores_per_worker:g} core: {num(worker_rate(m, a))} images/s. "
        f"Per predictor replica at {util} of a core: {num(predictor_rate(m, a))} images/s. "
        f"Kafka bytes per image: " + ", ".join(f"{k} {v:,}" for k, v in RECORD_BYTES.items()) + ". "
        f"S3 per prefix: {S3_GET_PER_PREFIX:,} GET, {S3_PUT_PER_PREFIX:,} PUT/COPY per second. "
        f"State: {num(a.bytes_per_entry)} B per entry, restore {num(restore)} records/s ({restore_from}).",
        "",
    ]
    rows: list[tuple[str, list[str]]] = [
        (f"worker CPU, cores at {util}", [num(p.worker_cores) for p in plans]),
        (f"workers by CPU ({a.cores_per_worker:g} core each, at least {a.min_workers})",
         [str(p.workers_by_cpu) for p in plans]),
        (f"partitions (>= {a.growth:g}x those, next of {PARTITION_BASE} x 2^k)", [f"{p.partitions:,}" for p in plans]),
        (f"workers with the busiest at <= {util} (its partitions)",
         [f"{p.workers:,} ({p.busiest_partitions} of {p.partitions:,})" for p in plans]),
        ("KEDA minReplicaCount / maxReplicaCount", [f"{p.keda_min:,} / {p.keda_max:,}" for p in plans]),
        (f"KEDA lagThreshold ({a.catch_up_s:g} s of one worker)", [f"{p.lag_threshold:,}" for p in plans]),
        ("predictor replicas / with workers at KEDA max", [f"{p.predictors:,} / {p.predictors_max:,}" for p in plans]),
        (f"S3 GET/s per prefix ({a.input_prefixes} input prefix{'es' if a.input_prefixes != 1 else ''})",
         [num(p.s3_get_per_s_input_prefix) for p in plans]),
        ("S3 PUT/s per input prefix, the uploads", [num(p.s3_put_per_s_input_prefix) for p in plans]),
        (f"S3 COPY/s, busiest archive prefix ({a.busiest_digit_share:.0%} of images)",
         [num(p.s3_copy_per_s_busiest_archive_prefix) for p in plans]),
        ("input prefixes needed at AWS's rates", [str(p.input_prefixes_needed) for p in plans]),
        ("S3 server CPU, cores (as measured: nanio)", [num(p.s3_server_cores) for p in plans]),
        (f"Kafka records/s produced ({len(RECORD_BYTES)} per image)", [num(p.kafka_records_per_s) for p in plans]),
        (f"Kafka MB/s produced / consumed / replicated (RF {a.replication_factor})",
         [f"{num(p.kafka_mb_per_s_produced)} / {num(p.kafka_mb_per_s_consumed)} / {num(p.kafka_mb_per_s_replicated)}"
          for p in plans]),
        ("broker CPU, cores (as measured: Tansu)", [num(p.broker_cores) for p in plans]),
        (f"partition replicas ({TOPICS} topics x partitions x RF)", [f"{p.partition_replicas:,}" for p in plans]),
        ("images table entries per year, billions", [num(p.entries_per_year / 1e9) for p in plans]),
        ("images table per year, GB (one copy)", [num(p.table_gb_per_year) for p in plans]),
        (f"busiest worker's tables per year, GB (+{a.standby_replicas} standby)",
         [num(p.busiest_worker_gb_per_year) for p in plans]),
        (f"its {a.worker_volume_gib:g} GiB volume full after", [duration(p.volume_full_days * 86400) for p in plans]),
        ("a fresh worker restores a year of its partitions in", [duration(p.restore_s_after_a_year) for p in plans]),
        ("first limit reached (deploy/k8s as it is, S3)",
         [_first_limit(p) for p in plans]),
        ("limits these settings do not lift",
         ["; ".join(_limit(limit) for limit in p.limits_passed if limit.kind == "S3") or "none" for p in plans]),
    ]
    lines.append("| | " + " | ".join(f"{_rate(p.rate)} images/s" for p in plans) + " |")
    lines.append("|---|" + "---:|" * len(plans))
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    lines += [
        "",
        f"deploy/k8s as it is ({a.partitions_now} partitions, KEDA {a.min_workers} to {a.partitions_now} at lagThreshold "
        f"{a.lag_threshold_now:,}, predictor HPA to {a.predictor_max_now}, {a.worker_volume_gib:g} GiB per worker):",
        "",
        f"- workers: up to {num(now['max_rate'])} images/s ({a.partitions_now} workers at {util}); "
        f"the floor of {a.min_workers} carries {num(now['floor_rate'])} images/s with no standing lag; "
        f"lagThreshold {a.lag_threshold_now:,} is {num(now['lag_threshold_s'])} s of one worker's work.",
        f"- predictor: {a.predictor_max_now} replicas carry {num(now['predictor_max_rate'])} images/s at {util} of a core; "
        f"the HPA's {util} is of a {a.predictor_request_now:g}-core request, so it adds a replica every "
        f"{num(now['hpa_replica_rate'])} images/s and is at its max from {num(now['hpa_at_max_rate'])} images/s.",
        "",
        "| limit | reached at, images/s |",
        "|---|---:|",
    ]
    lines += [f"| {limit.name} | {num(limit.at)} |" for limit in limits(m, a)]
    return "\n".join(lines) + "\n"


def as_json(plans: Sequence[Plan], m: Measured, a: Assumptions) -> dict[str, Any]:
    return {
        "measured": dataclasses.asdict(m),
        "assumptions": dataclasses.asdict(a),
        "record_bytes": RECORD_BYTES,
        "s3_per_prefix": {"get": S3_GET_PER_PREFIX, "put": S3_PUT_PER_PREFIX},
        "limits": [dataclasses.asdict(limit) for limit in limits(m, a)],
        "deployment_now": deployment_now(m, a),
        "plans": [dataclasses.asdict(p) for p in plans],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamapp capacity", description=__doc__.split("\n\n")[0])
    parser.add_argument("bench_json", type=Path, metavar="BENCH_JSON", help="a `streamapp bench --json` file")
    parser.add_argument("--rate", type=float, nargs="+", default=list(RATES), metavar="N",
                        help="target images/s (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of the table")
    for f in dataclasses.fields(Assumptions):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default,
                            help=f"{f.metadata['help']} (default %(default)s)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results = json.loads(args.bench_json.read_text(encoding="utf-8"))
        measured = Measured.from_bench(results)
        assumptions = Assumptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Assumptions)})
        plans = [plan(rate, measured, assumptions) for rate in args.rate]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"streamapp capacity: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(as_json(plans, measured, assumptions), indent=2))
    else:
        print(render(plans, measured, assumptions, str(args.bench_json)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
