"""``streamapp bench``: what one image costs, measured side by side in one run.

Reads: the bundled sample digits (uploaded many times under distinct keys).
Writes: a table on stdout, the same figures as JSON (``--json``), progress on
stderr, and a throw-away embedded stack in ``--data-dir``.

One invocation starts its own embedded stack and measures (2., 4., 5. and 6.
in turns, ``--rounds`` times, each with its share of the images, since this
machine's speed drifts within a minute; the JSON keeps each round's ratios):

1. startup: from launching a worker to its first image counted;
2. pipeline throughput: N notifications published at once, images/s from the
   first notification to the last image counted;
3. latency at a light, fixed rate: notification to counted, p50/p95/p99, and
   the stage breakdown the records carry (S3 get, transform, batch wait,
   predictor call, archive);
4. baseline: the KServe sample's path on the same images and servers, one
   event at a time: GetObject, its transform, one instance to the predictor
   (v1), PutObject of the original to the archive;
5. ceiling: the S3 server's own rate for what an image needs at minimum (one
   GET and one server-side COPY) at the pipeline's concurrency, no Kafka, no
   model;
6. direct: the peer a user would write instead, plain asyncio with no Kafka:
   GET, the same transform, batched predictor calls, COPY, at the worker's
   concurrency (the honest bar for what the topology costs);
7. predictor: images/s of the model server at batch sizes 1, 8, 32, 128 (as
   the workers send them), and 32 as JSON numbers, with its CPU per image.

For 2., 4., 5. and 6. it also reads every process's CPU time (``/proc``): CPU
milliseconds per image for the workers, the S3 server, the predictor, the
broker and the bench itself, which is what bounds throughput on a small
machine. ``--workers N`` starts N workers before the throughput run.

Then the state section (:mod:`streamapp.tools.bench_state`, stacks of its own):
restart, fresh-worker and ``GET /digits/`` figures at ``--entries`` levels of
preloaded counted images. ``--only pipeline`` or ``--only state`` runs one.

"Counted" is the moment the archive agent set the image in the ``images``
table: the Kafka timestamp of that table's changelog record, so no polling
interval blurs the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvloop
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamapp.embedded.broker import topic_partitions
from streamapp.embedded.notifications import minio_notification
from streamapp.embedded.process import free_port
from streamapp.embedded.stack import Stack, StackConfig
from streamapp.imaging.tensor import to_tensor, transform, use_one_thread
from streamapp.pipeline.records import ObjectRef
from streamapp.pipeline.storage import s3_config, s3_session
from streamapp.serving.client import PredictorClient
from streamapp.tools.profile import Sampler
from streamapp.tools.upload import Progress

log = logging.getLogger(__name__)

BATCH_SIZES = (1, 8, 32, 128)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=float), q))


def cpu_now(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each process of the stack, and by this one."""
    processes = {
        "workers": list(stack.workers.values()),
        "s3_server": [stack.s3.process] if stack.s3 and stack.s3.process else [],
        "predictor": [stack.predictor] if stack.predictor else [],
        "broker": [stack.broker.process] if stack.broker and stack.broker.process else [],
    }
    used = {name: sum(p.cpu_seconds() or 0.0 for p in procs) for name, procs in processes.items()}
    used["bench_client"] = time.process_time()  # publishing, S3 calls, watching the changelog
    return used


def cpu_ms_per_image(before: dict[str, float], after: dict[str, float], images: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) * 1000 / images for name in before}


@dataclass
class Image:
    key: str
    body: bytes
    ref: ObjectRef | None = None  # once uploaded


class Bench:
    def __init__(self, stack: Stack, samples: list[bytes], *, profile_dir: Path | None = None,
                 profile_rate: int = 100) -> None:
        self.stack = stack
        self.samples = samples
        self.profile_dir, self.profile_rate = profile_dir, profile_rate
        env = stack.client_env()
        self.env = env
        self.bucket = stack.config.input_bucket
        self.topic = stack.settings.events_topic
        self.changelog = f"{stack.settings.app_id}-images-changelog"
        self.concurrency = stack.settings.preprocess_concurrency
        # the worker's own client tuning, so the ceiling and the direct peer
        # measure the S3 calls at their cheapest, not a slower client
        self._s3_ctx = s3_session().create_client(
            "s3",
            endpoint_url=env["AWS_ENDPOINT_URL_S3"],
            region_name=env["AWS_REGION"],
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            config=s3_config(64),
        )

    async def __aenter__(self) -> Bench:
        self.s3 = await self._s3_ctx.__aenter__()
        self.producer = AIOKafkaProducer(bootstrap_servers=self.stack.broker.bootstrap, linger_ms=2)
        await self.producer.start()
        self.http = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.close()
        await self.producer.stop()
        await self._s3_ctx.__aexit__(None, None, None)

    def predictor_client(self, **options: str) -> PredictorClient:
        """A client of the stack's predictor, sending as the workers do unless ``options`` say otherwise."""
        settings = self.stack.settings
        return PredictorClient(self.http, base_url=self.stack.predictor_url, model_name=settings.model_name,
                               **{"protocol": settings.predictor_protocol, "binary": settings.predictor_binary, **options})

    # -- material ---------------------------------------------------------------

    def images(self, run: str, n: int) -> list[Image]:
        return [Image(f"bench/{run}/{i:06d}.png", self.samples[i % len(self.samples)]) for i in range(n)]

    async def put(self, image: Image) -> ObjectRef:
        response = await self.s3.put_object(Bucket=self.bucket, Key=image.key, Body=image.body, ContentType="image/png")
        image.ref = ObjectRef(
            bucket=self.bucket,
            key=image.key,
            etag=str(response["ETag"]).strip('"'),
            size=len(image.body),
            event_name="s3:ObjectCreated:Put",
        )
        return image.ref

    async def put_all(self, images: list[Image], label: str) -> None:
        bar = Progress(len(images), label)
        gate = asyncio.Semaphore(32)

        async def one(image: Image) -> None:
            async with gate:
                await self.put(image)
            bar.step()

        await asyncio.gather(*(one(image) for image in images))

    async def notify(self, image: Image) -> float:
        """Publish the MinIO notification; return when it was sent (epoch seconds)."""
        if image.ref is None:
            raise ValueError(f"{image.key} was never uploaded")
        key, value = minio_notification(image.ref, endpoint=self.env["AWS_ENDPOINT_URL_S3"])
        sent = time.time()
        await self.producer.send(self.topic, value=value, key=key)
        return sent

    # -- counted times ------------------------------------------------------------

    async def counted_times(self, identities: set[str], *, timeout: float, label: str) -> dict[str, float]:
        """identity -> epoch seconds it was counted, read from the images table's changelog."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.stack.broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
        )
        await consumer.start()
        found: dict[str, float] = {}
        bar = Progress(len(identities), label)
        try:
            tps = await topic_partitions(self.stack.broker.bootstrap, self.changelog, timeout=timeout)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout
            while len(found) < len(identities) and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    for message in messages:
                        identity = json.loads(message.key) if message.key else None
                        if identity in identities and identity not in found:
                            found[identity] = message.timestamp / 1000
                            bar.step()
        finally:
            await consumer.stop()
        if len(found) < len(identities):
            raise TimeoutError(f"{label}: only {len(found)} of {len(identities)} images counted within {timeout:.0f}s")
        return found

    async def stage_timings(self, identities: set[str], counted: dict[str, float]) -> dict[str, list[float]]:
        """Per-stage seconds for ``identities``: those the labeled records carry, and
        "archive": from the labeled record's timestamp to the image counted (the
        hop to the archive agent, the COPY and the table write)."""
        topic = self.stack.settings.labeled_topic
        consumer = AIOKafkaConsumer(bootstrap_servers=self.stack.broker.bootstrap, enable_auto_commit=False)
        await consumer.start()
        stages: dict[str, list[float]] = {}
        seen: set[str] = set()
        try:
            tps = await topic_partitions(self.stack.broker.bootstrap, topic)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            idle = 0
            while len(seen) < len(identities) and idle < 3:
                batch = await consumer.getmany(timeout_ms=500)
                idle = 0 if any(batch.values()) else idle + 1
                for messages in batch.values():
                    for message in messages:
                        record = json.loads(message.value)
                        identity = ObjectRef.from_data(record["image"]).identity
                        if identity in identities and identity not in seen:
                            seen.add(identity)
                            for stage, seconds in record["timings"].items():
                                stages.setdefault(stage, []).append(seconds)
                            stages.setdefault("archive", []).append(counted[identity] - message.timestamp / 1000)
        finally:
            await consumer.stop()
        return stages

    # -- the measurements -------------------------------------------------------

    async def startup(self) -> dict[str, float]:
        """Launch the worker with one event waiting; seconds to the first image counted."""
        image = self.images("startup", 1)[0]
        await self.put(image)
        await self.notify(image)
        await self.producer.flush()
        launched = time.time()
        self.stack.start_worker(0)
        counted = await self.counted_times({image.ref.identity}, timeout=120, label="startup")
        await asyncio.to_thread(self.stack.wait_worker_ready, 0)
        return {"worker_start_to_first_counted_s": counted[image.ref.identity] - launched}

    def scale_out(self, workers: int) -> None:
        """Workers 1 .. workers-1 join worker 0's group; returns once all are ready."""
        for index in range(1, workers):
            self.stack.start_worker(index)
        for index in range(1, workers):
            self.stack.wait_worker_ready(index)

    async def throughput(self, n: int, run: str = "throughput") -> dict[str, float]:
        images = self.images(run, n)
        await self.put_all(images, "uploading")
        with contextlib.ExitStack() as profiling:
            sampler = None
            if self.profile_dir is not None:
                pids = {f"worker-{i}": p.pid for i, p in self.stack.workers.items() if p.pid is not None}
                sampler = profiling.enter_context(Sampler(pids, self.profile_dir, rate=self.profile_rate))
            cpu_before = cpu_now(self.stack)
            first_sent = None
            for image in images:
                sent = await self.notify(image)
                first_sent = first_sent or sent
            await self.producer.flush()
            counted = await self.counted_times({i.ref.identity for i in images}, timeout=60 + n / 5, label="pipeline ")
            cpu = cpu_ms_per_image(cpu_before, cpu_now(self.stack), n)
        elapsed = max(counted.values()) - first_sent
        figures = {"images": n, "seconds": elapsed, "images_per_s": n / elapsed, "cpu_ms_per_image": cpu}
        if sampler is not None:
            figures["profile"] = sampler.shares()
        return figures

    async def latency(self, rate: float, seconds: float) -> dict[str, Any]:
        n = max(1, int(rate * seconds))
        images = self.images("latency", n)
        await self.put_all(images, "uploading")
        sent: dict[str, float] = {}
        bar = Progress(n, f"light load {rate:g}/s")
        start = time.monotonic()
        for index, image in enumerate(images):
            # a fixed schedule, not a fixed sleep: the rate holds whatever a send costs
            await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
            sent[image.ref.identity] = await self.notify(image)
            await self.producer.flush()
            bar.step()
        counted = await self.counted_times(set(sent), timeout=120, label="counted  ")
        latencies = [counted[identity] - sent[identity] for identity in sent]
        stages = await self.stage_timings(set(sent), counted)
        return {
            "rate_per_s": rate,
            "images": n,
            "p50_s": percentile(latencies, 50),
            "p95_s": percentile(latencies, 95),
            "p99_s": percentile(latencies, 99),
            "max_s": max(latencies),
            "stages_p50_s": {stage: percentile(v, 50) for stage, v in sorted(stages.items())},
            "stages_p95_s": {stage: percentile(v, 95) for stage, v in sorted(stages.items())},
        }

    async def baseline(self, n: int, run: str = "baseline") -> dict[str, float]:
        """The KServe sample's path: one event at a time, start to finish."""
        images = self.images(run, n)
        await self.put_all(images, "uploading")
        # the sample's transformer calls the v1 route, one instance per request
        client = self.predictor_client(protocol="v1")
        archive = self.stack.settings.archive_bucket
        bar = Progress(n, "baseline ")
        cpu_before = cpu_now(self.stack)
        started = time.monotonic()
        for image in images:
            response = await self.s3.get_object(Bucket=self.bucket, Key=image.key)
            async with response["Body"] as body:
                data = await body.read()
            tensor = to_tensor(data, mode="kserve-sample")
            (prediction,) = await client.predict(tensor[None])
            digit = prediction.digit
            await self.s3.put_object(Bucket=archive, Key=f"baseline/{digit}/{image.key}", Body=data)
            bar.step()
        elapsed = time.monotonic() - started
        cpu = cpu_ms_per_image(cpu_before, cpu_now(self.stack), n)
        return {"images": n, "seconds": elapsed, "images_per_s": n / elapsed, "cpu_ms_per_image": cpu}

    async def direct(self, n: int, run: str = "direct") -> dict[str, Any]:
        """What a user would write without Kafka: plain asyncio, the same images and servers.

        One aiobotocore client and one aiohttp session; per image GET, the
        project's transform as the worker runs it (small images on the loop,
        photos in a thread), then a batched predictor call (up to
        the worker's batch size, or its batch delay) and a server-side COPY to
        the archive; as many GETs and COPYs in flight as a worker runs.
        """
        images = self.images(run, n)
        await self.put_all(images, "uploading")
        settings = self.stack.settings
        client = self.predictor_client()
        archive = settings.archive_bucket
        fetch_gate = asyncio.Semaphore(settings.preprocess_concurrency)
        copy_gate = asyncio.Semaphore(settings.archive_concurrency)
        pending: asyncio.Queue[tuple[np.ndarray, asyncio.Future[int]]] = asyncio.Queue()
        bar = Progress(n, "direct   ")

        async def batcher() -> None:
            while True:
                batch = [await pending.get()]
                deadline = time.monotonic() + settings.batch_max_delay
                while len(batch) < settings.batch_max_size:
                    try:
                        batch.append(await asyncio.wait_for(pending.get(), deadline - time.monotonic()))
                    except TimeoutError:
                        break
                predictions = await client.predict(np.stack([tensor for tensor, _ in batch]))
                for (_, digit), prediction in zip(batch, predictions, strict=True):
                    digit.set_result(prediction.digit)

        async def one(image: Image) -> None:
            async with fetch_gate:
                response = await self.s3.get_object(Bucket=self.bucket, Key=image.key)
                async with response["Body"] as body:
                    data = await body.read()
                tensor = await transform(data, mode=settings.transform, max_pixels=settings.max_pixels)
            digit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            await pending.put((tensor, digit))
            label = await digit
            async with copy_gate:
                await self.s3.copy_object(Bucket=archive, Key=f"direct/{label}/{image.key}",
                                          CopySource={"Bucket": self.bucket, "Key": image.key})
            bar.step()

        batching = asyncio.create_task(batcher())
        cpu_before = cpu_now(self.stack)
        started = time.monotonic()
        try:
            await asyncio.gather(*(one(image) for image in images))
        finally:
            batching.cancel()
        elapsed = time.monotonic() - started
        cpu = cpu_ms_per_image(cpu_before, cpu_now(self.stack), n)
        return {"images": n, "seconds": elapsed, "images_per_s": n / elapsed, "cpu_ms_per_image": cpu}

    async def ceiling(self, n: int, run: str = "ceiling") -> dict[str, float]:
        """GET + COPY per image against the S3 server alone, at the pipeline's concurrency."""
        images = self.images(run, n)
        await self.put_all(images, "uploading")
        archive = self.stack.settings.archive_bucket
        gate = asyncio.Semaphore(self.concurrency)
        bar = Progress(n, "S3 alone ")

        async def one(image: Image) -> None:
            async with gate:
                response = await self.s3.get_object(Bucket=self.bucket, Key=image.key)
                async with response["Body"] as body:
                    await body.read()
                await self.s3.copy_object(
                    Bucket=archive, Key=f"ceiling/{image.key}", CopySource={"Bucket": self.bucket, "Key": image.key}
                )
            bar.step()

        cpu_before = cpu_now(self.stack)
        started = time.monotonic()
        await asyncio.gather(*(one(image) for image in images))
        elapsed = time.monotonic() - started
        cpu = cpu_ms_per_image(cpu_before, cpu_now(self.stack), n)
        return {
            "images": n,
            "concurrency": self.concurrency,
            "seconds": elapsed,
            "images_per_s": n / elapsed,
            "cpu_ms_per_image": cpu,
        }

    async def predictor(self, seconds_each: float) -> dict[str, float]:
        client = self.predictor_client()
        tensor = to_tensor(self.samples[0])
        figures = {}
        # the batch sizes as the workers send them (binary tensors where the
        # server takes them), then batch 32 as JSON numbers, for comparison
        json_client = self.predictor_client(protocol="v2", binary="off")
        runs = [(f"batch_{size}", client, size) for size in BATCH_SIZES] + [("batch_32_json", json_client, 32)]
        for name, runner, size in runs:
            batch = np.repeat(tensor[None], size, axis=0)
            await runner.predict(batch)  # warm up
            calls = 0
            cpu_before = cpu_now(self.stack)
            started = time.monotonic()
            while time.monotonic() - started < seconds_each:
                await runner.predict(batch)
                calls += 1
            figures[f"{name}_images_per_s"] = calls * size / (time.monotonic() - started)
            figures[f"{name}_cpu_ms_per_image"] = cpu_ms_per_image(cpu_before, cpu_now(self.stack), calls * size)["predictor"]
            say(f"predictor {name.replace('_', ' ')}: {figures[f'{name}_images_per_s']:.0f} images/s, "
                f"{figures[f'{name}_cpu_ms_per_image']:.2f} ms of its CPU per image")
        return figures


def table(results: dict[str, Any]) -> str:
    tp, base, ceil, lat = results["pipeline"], results["baseline"], results["ceiling"], results["latency"]

    def spread(name: str, form: str) -> str:
        by_round = results.get("ratios_by_round", {}).get(name, [])
        return f"; rounds {', '.join(form.format(v) for v in by_round)}" if len(by_round) > 1 else ""

    rows = [
        ("pipeline throughput", f"{tp['images_per_s']:.1f} images/s", f"{tp['images']} images in {tp['seconds']:.1f} s"),
        ("baseline (sample's sequential path)", f"{base['images_per_s']:.1f} images/s", f"{base['images']} images"),
        ("S3 ceiling (GET + COPY)", f"{ceil['images_per_s']:.1f} images/s", f"concurrency {ceil['concurrency']}"),
        ("direct peer (asyncio, no Kafka)", f"{results['direct']['images_per_s']:.1f} images/s",
         f"{results['direct']['images']} images"),
        ("pipeline / baseline", f"{results['ratios']['pipeline_over_baseline']:.2f}x",
         f"goal >= 2x{spread('pipeline_over_baseline', '{:.2f}')}"),
        ("pipeline / ceiling", f"{results['ratios']['pipeline_over_ceiling'] * 100:.0f}%",
         f"goal >= 55%{spread('pipeline_over_ceiling', '{:.0%}')}"),
        ("pipeline / direct", f"{results['ratios']['pipeline_over_direct']:.2f}x",
         f"goal >= 0.8x{spread('pipeline_over_direct', '{:.2f}')}"),
        ("worker CPU / bare S3 client CPU", f"{results['ratios']['worker_cpu_over_s3_client']:.2f}x",
         f"goal <= 2x (the ceiling's client: one GET + one COPY){spread('worker_cpu_over_s3_client', '{:.2f}')}"),
        (f"latency at {lat['rate_per_s']:g}/s p50", f"{lat['p50_s'] * 1000:.0f} ms", "notification to counted"),
        ("latency p95", f"{lat['p95_s'] * 1000:.0f} ms", ""),
        ("latency p99", f"{lat['p99_s'] * 1000:.0f} ms", "goal <= 250 ms"),
        ("worker start to first counted", f"{results['startup']['worker_start_to_first_counted_s']:.2f} s", "goal <= 5 s"),
    ]
    for stage, p50 in lat["stages_p50_s"].items():
        rows.append((f"  stage {stage} p50 / p95", f"{p50 * 1000:.1f} ms", f"{lat['stages_p95_s'][stage] * 1000:.1f} ms"))
    for phase, figures in (("pipeline", tp), ("S3 ceiling", ceil), ("direct", results["direct"]), ("baseline", base)):
        cpu = figures["cpu_ms_per_image"]
        rows.append((f"CPU per image, {phase}", f"{sum(cpu.values()):.1f} ms", ", ".join(
            f"{name.replace('_', ' ')} {ms:.1f}" for name, ms in cpu.items() if ms >= 0.05)))
    profiles = tp.get("profile", {})
    for worker, shares in profiles.items():
        for name, share in shares.items():
            # with one worker its share of the workers' CPU per image is in ms
            ms = f"{share * tp['cpu_ms_per_image']['workers']:.2f} ms per image" if len(profiles) == 1 else ""
            rows.append((f"  {worker}: {name}", f"{share * 100:.1f}%", ms))
    predictor = results["predictor"]
    for name, value in predictor.items():
        if name.endswith("_images_per_s"):
            run = name.removesuffix("_images_per_s")
            cpu = predictor.get(f"{run}_cpu_ms_per_image")
            rows.append((f"predictor {run.replace('_', ' ')}", f"{value:.0f} images/s",
                         f"{cpu:.2f} ms of its CPU per image" if cpu is not None else ""))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>16}  {c}" for a, b, c in rows)


async def run(stack: Stack, args: argparse.Namespace, samples: list[bytes]) -> dict[str, Any]:
    use_one_thread()  # the baseline and the direct peer transform here, set up as the worker's
    async with Bench(stack, samples, profile_dir=args.profile, profile_rate=args.profile_rate) as bench:
        results: dict[str, Any] = {}
        say("== startup")
        results["startup"] = await bench.startup()
        if args.workers > 1:
            say(f"== starting {args.workers - 1} more worker(s)")
            await asyncio.to_thread(bench.scale_out, args.workers)
        # The four phases that the ratios compare run in turns, round after
        # round (pipeline, ceiling, direct, baseline, then again): this
        # machine's speed drifts by tens of percent within a minute, and in
        # turns each phase gets its share of every speed
        rounds: dict[str, list[dict[str, Any]]] = {"pipeline": [], "ceiling": [], "direct": [], "baseline": []}
        each, baseline_each = max(1, args.images // args.rounds), max(1, min(args.images, args.baseline_images) // args.rounds)
        for r in range(args.rounds):
            say(f"== round {r + 1} of {args.rounds}: pipeline, S3 alone, direct peer, baseline")
            rounds["pipeline"].append(await bench.throughput(each, f"throughput-{r}"))
            rounds["ceiling"].append(await bench.ceiling(each, f"ceiling-{r}"))
            rounds["direct"].append(await bench.direct(each, f"direct-{r}"))
            rounds["baseline"].append(await bench.baseline(baseline_each, f"baseline-{r}"))
        results.update({phase: combine(figures) for phase, figures in rounds.items()})
        say("== latency at a light rate")
        results["latency"] = await bench.latency(args.rate, args.latency_seconds)
        say("== predictor")
        results["predictor"] = await bench.predictor(args.predictor_seconds)
    results["ratios"] = ratios(results)
    # the same ratios per round: how far the machine moved them
    results["ratios_by_round"] = {
        name: [ratios({phase: figures[r] for phase, figures in rounds.items()})[name] for r in range(args.rounds)]
        for name in results["ratios"]
    }
    return results


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """The goals' ratios from the phases' figures."""
    return {
        "pipeline_over_baseline": results["pipeline"]["images_per_s"] / results["baseline"]["images_per_s"],
        "pipeline_over_ceiling": results["pipeline"]["images_per_s"] / results["ceiling"]["images_per_s"],
        "pipeline_over_direct": results["pipeline"]["images_per_s"] / results["direct"]["images_per_s"],
        "worker_cpu_over_s3_client": results["pipeline"]["cpu_ms_per_image"]["workers"]
        / results["ceiling"]["cpu_ms_per_image"]["bench_client"],
    }


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's rounds as one run: images and seconds summed, CPU per image
    weighted by images, py-spy's shares averaged; ``rounds`` keeps each
    round's images/s."""
    images = sum(r["images"] for r in rounds)
    seconds = sum(r["seconds"] for r in rounds)
    combined = {**rounds[0], "images": images, "seconds": seconds, "images_per_s": images / seconds,
                "cpu_ms_per_image": {name: sum(r["cpu_ms_per_image"][name] * r["images"] for r in rounds) / images
                                     for name in rounds[0]["cpu_ms_per_image"]},
                "rounds_images_per_s": [r["images_per_s"] for r in rounds]}
    profiles = [r["profile"] for r in rounds if "profile" in r]
    if profiles:
        combined["profile"] = {
            worker: {name: sum(p[worker].get(name, 0.0) for p in profiles) / len(profiles)
                     for name in {n for p in profiles for n in p[worker]}}
            for worker in profiles[0]
        }
    return combined


def sample_bytes() -> list[bytes]:
    from importlib import resources

    folder = resources.files("streamapp").joinpath("assets", "samples")
    return [entry.read_bytes() for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".png")]


def main(argv: list[str] | None = None) -> int:
    from streamapp.tools import bench_state  # it imports this module

    parser = argparse.ArgumentParser(prog="streamapp bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000,
                        help="images for the pipeline, the ceiling and the direct peer, each (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the compared phases take turns this many times, each with its share of the images "
                             "(default %(default)s)")
    parser.add_argument("--rate", type=float, default=20.0, help="light-load rate, images/s (default %(default)s)")
    parser.add_argument("--latency-seconds", type=float, default=15.0, help="light-load duration (default %(default)s)")
    parser.add_argument("--baseline-images", type=int, default=300, help="cap for the sequential baseline (default %(default)s)")
    parser.add_argument("--predictor-seconds", type=float, default=2.0, help="per batch size (default %(default)s)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1,
                        help="workers sharing the partitions from the throughput run on (default %(default)s)")
    parser.add_argument("--data-dir", type=Path, default=Path(".data/bench"), help="the bench's own stack (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the workers with py-spy during the throughput run (raw stacks in DIR); "
                             "the table then shows where their CPU went (figures of a profiled run are not of record)")
    parser.add_argument("--profile-rate", type=int, default=100, metavar="HZ",
                        help="py-spy's samples a second with --profile; a short run needs more (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="STREAMAPP_X=V", help="a worker setting")
    parser.add_argument("--only", choices=("pipeline", "state"),
                        help="one section: pipeline (startup .. predictor) or state (streamapp.tools.bench_state); default both")
    parser.add_argument("--entries", type=bench_state.parse_entries,
                        default=list(bench_state.DEFAULT_ENTRIES), metavar="N,N,..",
                        help="state section: preloaded counted images per level (default 0,100000,1000000)")
    args = parser.parse_args(argv)
    worker_settings = dict(item.split("=", 1) for item in args.set)
    results: dict[str, Any] = {}
    if args.only != "state":
        config = StackConfig(
            data_dir=args.data_dir, web_port=free_port(), partitions=args.partitions, worker_settings=worker_settings
        )
        samples = sample_bytes()
        say(f"starting the embedded stack in {args.data_dir} ...")
        stack = Stack(config)
        try:
            stack.start(workers=0)
            # the workers' event loop, so the ceiling and the direct peer run
            # their S3 calls at least as cheaply as a worker can
            results = uvloop.run(run(stack, args, samples))
        finally:
            stack.stop()
    if args.only != "pipeline":
        results["state"] = bench_state.measure(
            args.entries, data_dir=args.data_dir, partitions=args.partitions, worker_settings=worker_settings
        )
        results["state_goals"] = [
            {"goal": name, "figures": figures, "met": met} for name, figures, met in bench_state.goals(results["state"])
        ]
    results["settings"] = {
        "images": args.images,
        "rate": args.rate,
        "partitions": args.partitions,
        "workers": args.workers,
        **({"entries": args.entries} if "state" in results else {}),
        **worker_settings,
    }
    if "pipeline" in results:
        print(table(results))
    if "state" in results:
        print(bench_state.table(results["state"]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        say(f"wrote {args.json}")
    return 0
