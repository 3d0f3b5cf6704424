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
         "--baseline-images", "10", "--rounds", "2", "--predictor-seconds", "0.2", "--data-dir", str(tmp_path / "stack"),
         "--entries", "0,3000", "--profile", str(tmp_path / "profile"), "--profile-rate", "1000", "--json", str(out)],
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
    assert results["pipeline"]["images"] == results["direct"]["images"] == results["ceiling"]["images"] == 40
    assert results["baseline"]["images"] == 10
    # the compared phases took turns: each ratio also per round
    assert all(len(results["pipeline"][key]) == 2 for key in ("rounds_images_per_s",))
    assert set(results["ratios_by_round"]) == set(results["ratios"])
    assert all(len(v) == 2 and all(positive(x) for x in v) for v in results["ratios_by_round"].values())
    latency = results["latency"]
    assert latency["images"] == 20
    assert 0 < latency["p50_s"] <= latency["p95_s"] <= latency["p99_s"] <= latency["max_s"]
    assert set(latency["stages_p50_s"]) == {"s3_get", "transform", "batch_wait", "predict", "archive"}
    assert all(positive(v) for v in latency["stages_p50_s"].values())
    runs = [f"batch_{b}" for b in (1, 8, 32, 128)] + ["batch_32_json"]
    assert set(results["predictor"]) == {f"{run}_{figure}" for run in runs for figure in ("images_per_s", "cpu_ms_per_image")}
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
        assert "error" not in level, (level["entries"], level["error"], run.stdout[-3000:])
        for key in ("restart_to_serving_s", "fresh_worker_to_serving_s", "get_digits_p50_ms", "get_digits_p99_ms",
                    "rss_mb"):
            assert positive(level[key]), (level["entries"], key)
        assert level["get_digits_p50_ms"] <= level["get_digits_p99_ms"]
    # the table a person reads carries the same figures and the goals
    for line in ("pipeline / baseline", "pipeline / ceiling", "pipeline / direct", "worker CPU / bare S3 client CPU",
                 "latency p99", "worker start to first counted", "CPU per image, pipeline", "worker-0: s3 client"):
        assert line in run.stdout


def test_rounds_combine_into_one_run_weighted_by_images():
    from streamapp.tools.bench import combine

    rounds = [
        {"images": 100, "seconds": 2.0, "images_per_s": 50.0, "concurrency": 8,
         "cpu_ms_per_image": {"workers": 10.0, "s3_server": 4.0}, "profile": {"worker-0": {"s3": 0.5, "kafka": 0.5}}},
        {"images": 300, "seconds": 3.0, "images_per_s": 100.0, "concurrency": 8,
         "cpu_ms_per_image": {"workers": 6.0, "s3_server": 2.0}, "profile": {"worker-0": {"s3": 0.3, "loop": 0.7}}},
    ]
    combined = combine(rounds)
    assert combined["images"] == 400 and combined["seconds"] == 5.0 and combined["images_per_s"] == 80.0
    assert combined["cpu_ms_per_image"] == {"workers": 7.0, "s3_server": 2.5}
    assert combined["rounds_images_per_s"] == [50.0, 100.0] and combined["concurrency"] == 8
    assert combined["profile"]["worker-0"] == pytest.approx({"s3": 0.4, "kafka": 0.25, "loop": 0.35})
