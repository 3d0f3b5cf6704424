"""The ``streamapp`` command.

    streamapp up          the whole pipeline on this machine (embedded stack)
    streamapp upload      put images into the input bucket and announce them
    streamapp predictor   the KServe v1 / Open Inference Protocol v2 model server
    streamapp bench       throughput and latency, side by side with the sample's path
    streamapp dead-letters list|redrive
                          the latest dead letters; re-publish the notifications they failed on
    streamapp capacity    partitions, workers, predictors and KEDA bounds for a rate, from a bench JSON

The worker itself is Faust's own command: ``faust -A streamapp worker``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from importlib import resources
from pathlib import Path

DEFAULT_DATA_DIR = Path(os.environ.get("STREAMAPP_DATA_DIR", ".data"))


def _samples_dir() -> Path:
    return Path(str(resources.files("streamapp").joinpath("assets", "samples")))


def _stack_env(data_dir: Path) -> dict[str, str]:
    """The environment of a running ``streamapp up`` in ``data_dir``, if there is one."""
    from streamapp.embedded.stack import read_env_file

    path = data_dir / "stack.env"
    return read_env_file(path) if path.exists() else {}


# -- up -------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from streamapp.embedded.stack import Stack, StackConfig

    config = StackConfig(
        data_dir=args.data_dir,
        web_port=args.web_port,
        broker_port=args.broker_port,
        s3_port=args.s3_port,
        predictor_port=args.predictor_port,
        partitions=args.partitions,
        input_bucket=args.bucket,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    print(f"starting the embedded stack in {config.data_dir.resolve()} ...", flush=True)
    with Stack(config) as stack:
        env = stack.client_env()
        print(f"  broker     {env['BROKER_URL']}")
        print(f"  S3         {env['AWS_ENDPOINT_URL_S3']} (credentials in {stack.env_file})")
        print(f"  predictor  {stack.predictor_url}")
        for index in range(args.workers):
            if index:
                stack.start_worker(index)
                stack.wait_worker_ready(index)
            print(f"  worker-{index}   {stack.web_url(index)}  (log: {stack.logs / f'worker-{index}.log'})")
        if args.samples:
            from streamapp.tools.upload import upload

            os.environ.update(env)
            asyncio.run(
                upload(
                    [_samples_dir()],
                    bucket=args.bucket,
                    broker_url=env["BROKER_URL"],
                    events_topic=stack.settings.events_topic,
                    endpoint_url=env["AWS_ENDPOINT_URL_S3"],
                    region=env.get("AWS_REGION"),
                )
            )
        print(f"\ndashboard: {stack.web_url(0)}/   counts: {stack.web_url(0)}/digits/")
        print(f"upload more: streamapp upload --data-dir {config.data_dir} PATH...   stop: Ctrl-C", flush=True)
        while not stop.wait(1.0):
            for worker in list(stack.workers.values()):
                worker.check()
        print("stopping ...", flush=True)
    print("stopped.")
    return 0


# -- upload ------------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    from streamapp.settings import Settings
    from streamapp.tools.upload import upload

    env = dict(os.environ)
    stack_env = _stack_env(args.data_dir)
    if stack_env and not (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")):
        env.update(stack_env)  # a running `streamapp up` in this data dir
        os.environ.update(stack_env)
    settings = Settings.from_env(env)
    bucket = args.bucket or env.get("STREAMAPP_INPUT_BUCKET", "images")
    uploaded = asyncio.run(
        upload(
            args.paths,
            bucket=bucket,
            prefix=args.prefix,
            broker_url=env.get("BROKER_URL"),
            events_topic=settings.events_topic,
            notify=args.notify,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            concurrency=args.concurrency,
        )
    )
    notified = " and announced on " + settings.events_topic if args.notify else ""
    print(f"uploaded {len(uploaded)} images to s3://{bucket}/{args.prefix}{notified}")
    return 0


# -- predictor ---------------------------------------------------------------------


def cmd_predictor(args: argparse.Namespace, rest: list[str]) -> int:
    from streamapp.serving import server as modelserver

    return modelserver.main(rest) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamapp", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the whole pipeline on an embedded stack")
    up.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="S3 data, logs, stack.env (default %(default)s)")
    up.add_argument("--web-port", type=int, default=int(os.environ.get("WEB_PORT", 6066)), help="first worker's web port")
    up.add_argument("--broker-port", type=int, default=0, help="Kafka-protocol port (default: any free port)")
    up.add_argument("--s3-port", type=int, default=0, help="S3 port (default: any free port)")
    up.add_argument("--predictor-port", type=int, default=0, help="predictor port (default: any free port)")
    up.add_argument("--workers", type=int, default=1, help="workers in the consumer group (default %(default)s)")
    up.add_argument("--partitions", type=int, default=8, help="partitions per topic (default %(default)s)")
    up.add_argument("--bucket", default="images", help="input bucket (default %(default)s)")
    up.add_argument("--no-samples", dest="samples", action="store_false", help="do not upload the bundled sample digits")
    up.set_defaults(func=cmd_up)

    upl = sub.add_parser("upload", help="upload images and publish their MinIO notifications")
    upl.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    upl.add_argument("--bucket", help="input bucket (default: the stack's, or 'images')")
    upl.add_argument("--prefix", default="", help="key prefix")
    upl.add_argument("--no-notify", dest="notify", action="store_false",
                     help="do not publish notifications (the store sends its own)")
    upl.add_argument("--concurrency", type=int, default=16)
    upl.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                     help="read a running `streamapp up`'s stack.env from here (default %(default)s)")
    upl.set_defaults(func=cmd_upload)

    pred = sub.add_parser("predictor", help="serve the digit model (KServe v1 and v2)", add_help=False)
    pred.set_defaults(func=cmd_predictor)

    bench = sub.add_parser("bench", help="measure the pipeline against the sample's sequential path", add_help=False)
    bench.set_defaults(func=cmd_bench)

    dead = sub.add_parser("dead-letters", help="list the dead letters, or redrive them (list|redrive)", add_help=False)
    dead.set_defaults(func=cmd_dead_letters)

    sub.add_parser("capacity", help="partitions, workers, predictors, KEDA bounds for a rate, from a bench JSON",
                   add_help=False).set_defaults(func=cmd_capacity)
    return parser


def cmd_bench(args: argparse.Namespace, rest: list[str]) -> int:
    from streamapp.tools import bench

    return bench.main(rest)


def cmd_dead_letters(args: argparse.Namespace, rest: list[str]) -> int:
    from streamapp.tools import dead_letters

    return dead_letters.main(rest)


def cmd_capacity(args: argparse.Namespace, rest: list[str]) -> int:
    from streamapp.tools import capacity

    return capacity.main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command in ("predictor", "bench", "dead-letters", "capacity"):
        return args.func(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)
