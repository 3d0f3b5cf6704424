"""The app factory: a worker built from settings, several in one process, nothing connected."""

from __future__ import annotations

from streamapp.app import StreamApp, create_app
from streamapp.settings import Settings


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
        "streamapp.agents.archive", "streamapp.agents.infer", "streamapp.agents.preprocess",
        "streamapp.agents.tally", "streamapp.agents.tally_dead_letters",
    ]


def test_the_pages_are_registered_on_their_app():
    app = create_app(Settings(app_id="pages"))
    assert set(app.web.views) == {"/", "/digits/", "/stats/", "/internal/counts/{table}/"}
    # the clients are services of the app, started before its agents
    dependencies = list(app.on_init_dependencies())
    assert dependencies[:2] == [app.storage, app.http]
