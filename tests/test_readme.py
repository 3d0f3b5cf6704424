"""The README stays true: its settings table is the settings, and the two
commands it promises are the ones the Makefile and CI run."""

from __future__ import annotations

import re
from pathlib import Path

from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_settings_table_matches_the_code():
    table = README.split("<!-- settings-table", 1)[1].split("<!-- /settings-table -->", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| `(.*?)` \| (.*) \|$", table, re.MULTILINE)
    assert rows == Settings.documentation()


def test_two_commands_are_the_makefile_targets_and_ci_runs_the_test_one():
    commands = re.findall(r"^make (\w+)", README.split("## Two commands", 1)[1].split("##", 1)[0], re.MULTILINE)
    assert commands == ["up", "test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^up:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_metrics_table_lists_every_metric_the_worker_and_the_model_server_register():
    from streamapp.pipeline.metrics import Metrics
    from streamapp.serving.server import ServerMetrics

    registered = set()
    for registry in (Metrics().registry, ServerMetrics().registry):
        for family in registry.collect():
            registered.add(family.name + ("_total" if family.type == "counter" else ""))
            assert family.documentation, family.name
    listed = set(re.findall(r"^\| `(streamapp_\w+)` \|", README, flags=re.M))
    assert listed == registered | {"streamapp_consumer_lag"}  # the lag is collected per app when scraped
