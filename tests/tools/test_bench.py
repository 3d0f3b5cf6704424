"""``streamapp bench`` runs and reports every figure (a smoke test, not a timed one:
the figures themselves are in docs/BENCHMARKS.md, measured on a quiet machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "streamapp", "bench", "--images", "40", "--rate", "20", "--latency-seconds", "1",
         "--baseline-images", "10", "--predictor-seconds", "0.2", "--data-dir", str(tmp_path / "stack"),
         "--entries", "0,3000", "--profile", str(tmp_path / "profile"), "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())

    def positive(value: float) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value) and value > 0

    assert positive(results["startup"]["worker_start_to_first_counted_s"])
    for section in ("pipeline", "baseline", "ceiling", "direct"):
        assert positive(results[section]["images_per_s"]), section
        assert positive(results[section]["cpu_ms_per_image"]["bench_client"]) or section == "pipeline", section
    assert results["pipeline"]["images"] == results["direct"]["images"] == 40
    latency = results["latency"]
    assert latency["images"] == 20
    assert 0 < latency["p50_s"] <= latency["p95_s"] <= latency["p99_s"] <= latency["max_s"]
    assert set(latency["stages_p50_s"]) == {"s3_get", "transform", "batch_wait", "predict", "archive"}
    assert all(positive(v) for v in latency["stages_p50_s"].values())
    assert set(results["predictor"]) == {f"batch_{b}_images_per_s" for b in (1, 8, 32, 128)}
    assert all(positive(v) for v in results["predictor"].values())
    # where the CPU went, per image, for each process of the stack
    assert set(results["pipeline"]["cpu_ms_per_image"]) == {"workers", "s3_server", "predictor", "broker", "bench_client"}
    assert positive(results["pipeline"]["cpu_ms_per_image"]["workers"])
    assert positive(results["ceiling"]["cpu_ms_per_image"]["s3_server"])
    assert positive(results["ratios"]["pipeline_over_baseline"])
    assert positive(results["ratios"]["pipeline_over_ceiling"])
    assert results["ratios"]["pipeline_over_direct"] == pytest.approx(
        results["pipeline"]["images_per_s"] / results["direct"]["images_per_s"])
    assert results["ratios"]["worker_cpu_over_s3_client"] == pytest.approx(
        results["pipeline"]["cpu_ms_per_image"]["workers"] / results["ceiling"]["cpu_ms_per_image"]["bench_client"])
    # where the worker's CPU went, from py-spy's samples during the throughput run
    (shares,) = results["pipeline"]["profile"].values()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert "s3 client (aiobotocore)" in shares and "transform (imaging)" in shares
    assert (tmp_path / "profile" / "worker-0.txt").stat().st_size > 0
    # the state section: one object per level of preloaded entries
    assert [level["entries"] for level in results["state"]] == [0, 3000]
    for level in results["state"]:
        for key in ("restart_to_serving_s", "fresh_worker_to_serving_s", "get_digits_p50_ms", "get_digits_p99_ms",
                    "rss_mb"):
            assert positive(level[key]), (level["entries"], key)
        assert level["get_digits_p50_ms"] <= level["get_digits_p99_ms"]
    # the table a person reads carries the same figures and the goals
    for line in ("pipeline / baseline", "pipeline / ceiling", "pipeline / direct", "worker CPU / bare S3 client CPU",
                 "latency p99", "worker start to first counted", "CPU per image, pipeline", "worker-0: s3 client"):
        assert line in run.stdout
