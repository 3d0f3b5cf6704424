"""The app factory: a worker built from settings, several in one process, nothing connected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from streamapp.app import StreamApp, create_app
from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_two_apps_with_other_settings_live_side_by_side():
    a = create_app(Settings(app_id="a", events_topic="events-a"))
    b = create_app(Settings(app_id="b", events_topic="events-b", batch_max_size=7))
    assert isinstance(a, StreamApp) and a.conf.id == "a" and b.conf.id == "b"
    assert a.pipeline.events_topic.get_topic_name() == "events-a"
    assert b.pipeline.events_topic.get_topic_name() == "events-b"
    assert b.pipeline.policy.max_size == 7 and a.pipeline.policy.max_size == Settings().batch_max_size
    # the tables, agents and counters belong to their app
    assert a.pipeline.images is not b.pipeline.images and a.pipeline.stats is not b.pipeline.stats
    assert a.tables["images"] is a.pipeline.images
    assert sorted(a.agents) == sorted(b.agents) == [
        "streamapp.pipeline.agents.archive", "streamapp.pipeline.agents.infer", "streamapp.pipeline.agents.preprocess",
        "streamapp.pipeline.agents.tally_dead_letters",
    ]


def test_a_worker_polls_a_bounded_number_of_records():
    """Without a bound one poll hands out everything fetched, and the turns the
    fetcher takes (tests/kafka/test_fetch_order.py, run at this bound) never
    come into play."""
    from tests.kafka.test_fetch_order import POLL

    assert create_app(Settings(app_id="polls")).conf.broker_max_poll_records == POLL


def test_the_pages_are_registered_on_their_app():
    app = create_app(Settings(app_id="pages"))
    assert set(app.web.views) == {"/", "/digits/", "/stats/", "/metrics", "/api/dashboard/", "/internal/recent/",
                                  "/internal/counts/{table}/"}
    # the clients are services of the app, started before its agents
    dependencies = list(app.on_init_dependencies())
    assert dependencies[:2] == [app.storage, app.http]


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_worker_imports_neither_the_tools_nor_the_embedded_stack():
    modules = imported_after(
        "from streamapp.app import create_app\nfrom streamapp.settings import Settings\n"
        "app = create_app(Settings.from_env({}))\napp.finalize()"
    )
    assert "streamapp.pipeline.agents" in modules  # the app was really built
    assert not {m for m in modules if m.startswith(("streamapp.tools", "streamapp.embedded"))}


def test_the_model_server_and_imaging_need_no_faust():
    modules = imported_after("import streamapp.serving.server, streamapp.serving.client, streamapp.imaging.tensor")
    assert "streamapp.serving.protocol" in modules
    assert not {m for m in modules if m == "faust" or m.startswith(("faust.", "streamapp.pipeline"))}
