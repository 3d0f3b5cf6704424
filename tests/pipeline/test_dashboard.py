"""The dashboard (GET /) in a real headless Chromium against the session stack.

Opens the page, uploads images and hostile dead letters while it polls, and
reads what a user sees from the DOM over the Chrome DevTools Protocol: the
counts, the images/s and latency charts, the thumbnails, the dead letters
(hostile keys and reasons shown as text, no script run), the stages and the
workers' partitions; then saves a screenshot under the test's tmp_path.

Chromium is Debian's ``chromium`` package: found on PATH (or ``CHROMIUM=path``),
else installed with apt-get when running as root (as CI does); the test skips,
saying why, only where none can be had. No Playwright or browser download: the
protocol client below is aiohttp's websocket client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import SETTLE, counts_if_ready, http_json, produce, tricky_copies, upload_files, wait_for

pytestmark = pytest.mark.integration

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_TIMEOUT = 600.0
WIDTH, HEIGHT = 1280, 800


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", *args], capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def find_or_install_chromium() -> str:
    """A Chromium executable, or pytest.skip with the reason none can be had."""
    if configured := os.environ.get("CHROMIUM"):
        if path := shutil.which(configured):
            return path
        pytest.skip(f"CHROMIUM={configured!r} is not an executable")
    for name in CANDIDATES:
        if path := shutil.which(name):
            return path
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(f"no Chromium on PATH ({', '.join(CANDIDATES)}; or set CHROMIUM=path) and it cannot be "
                    "installed here: installing Debian's `chromium` package needs root and apt-get")
    install = ("install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", "chromium")
    try:
        result = _apt_get(*install)
        if result.returncode != 0:  # most often: no package lists yet
            _apt_get("update")
            result = _apt_get(*install)
    except subprocess.TimeoutExpired:
        pytest.skip(f"installing Debian's `chromium` package took over {INSTALL_TIMEOUT:.0f} s")
    if result.returncode != 0 or not (path := shutil.which("chromium")):
        pytest.skip("Debian's `chromium` package could not be installed: " + (result.stderr or result.stdout)[-600:])
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    started = time.monotonic()
    path = find_or_install_chromium()
    print(f"chromium: {path} (found or installed in {time.monotonic() - started:.1f} s)")
    return path


class Browser:
    """One page of a headless Chromium, driven over the DevTools protocol.

    The websocket lives on an event loop in a thread of its own, so the test
    stays synchronous (the stack's helpers run their own ``asyncio.run``).
    Protocol events (exceptions, requests) are kept in :attr:`events`.
    """

    def __init__(self, executable: str, profile: Path, log: Path) -> None:
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
                 "--mute-audio", f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-port=0",
                 f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="devtools", daemon=True)
        self._thread.start()
        try:
            # with port 0 Chromium picks a free port and writes it to DevToolsActivePort
            port_file = profile / "DevToolsActivePort"
            port = wait_for(lambda: self._alive() and port_file.exists() and port_file.read_text().split("\n")[0],
                            timeout=60, what="Chromium's DevTools port")
            pages = wait_for(lambda: [t for t in http_json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"],
                             timeout=30, what="Chromium's first page")
            self._run(self._connect(pages[0]["webSocketDebuggerUrl"]), timeout=30)
        except BaseException:
            self.close()
            raise

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Chromium exited with {self.process.returncode}: "
                                 + self._log.read_text(errors="replace")[-2000:])
        return True

    def _run(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)  # screenshots are large
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id"), None)
            if future is None:
                self.events.append(data)
            elif not future.done():
                if "error" in data:
                    future.set_exception(AssertionError(f"DevTools: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))
        for future in self._pending.values():
            future.cancel()

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        ident = next(self._ids)
        future = self._pending[ident] = asyncio.get_running_loop().create_future()
        await self._ws.send_json({"id": ident, "method": method, "params": params})
        return await future

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        return self._run(self._call(method, params), timeout)

    def evaluate(self, expression: str) -> Any:
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait(self, expression: str, check: Callable[[Any], Any], *, what: str, timeout: float = SETTLE) -> Any:
        """Evaluate ``expression`` until ``check(value)`` holds; the last value."""
        return wait_for(lambda: check(value := self.evaluate(expression)) and (value or True),
                        timeout=timeout, what=what)

    def open(self, url: str) -> None:
        for domain in ("Page", "Runtime", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait("document.readyState", lambda state: state == "complete", what=f"{url} to load", timeout=30)

    def screenshot(self, path: Path) -> Path:
        """The whole page, WIDTH pixels wide, as PNG."""
        height = self.evaluate("document.documentElement.scrollHeight")
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": WIDTH, "height": max(HEIGHT, height), "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        if self._thread.is_alive():
            async def disconnect() -> None:
                if hasattr(self, "_ws"):
                    await self._ws.close()
                    await self._session.close()

            with contextlib.suppress(Exception):
                self._run(disconnect(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if not self._loop.is_running():
            self._loop.close()


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    browser = Browser(chromium, profile, tmp_path / "chromium.log")
    try:
        yield browser
    finally:
        browser.close()


# what the page shows, read from the DOM (the ids and data attributes dashboard.html keeps stable)
DIGITS = "[...Array(10).keys()].map(d => Number(document.getElementById('n' + d).textContent))"
SERIES = """[...document.querySelectorAll('#%s path.series')].map(p => ({
    series: p.dataset.series, points: Number(p.dataset.points), max: Number(p.dataset.max), d: p.getAttribute('d')}))"""
IMAGES = """[...document.querySelectorAll('#images figure')].map(f => ({
    object: f.dataset.object, digit: Number(f.dataset.digit), text: f.querySelector('figcaption').textContent,
    src: f.querySelector('img') ? f.querySelector('img').getAttribute('src').slice(0, 30) : null,
    width: f.querySelector('img') ? f.querySelector('img').naturalWidth : 0}))"""
DEAD_LETTERS = """[...document.querySelectorAll('#dead-letters tbody tr')].map(r => ({
    kind: r.dataset.kind, stage: r.dataset.stage, object: r.dataset.object,
    cells: [...r.cells].map(c => c.textContent), elements: r.querySelectorAll('img, script').length}))"""
STAGES = """Object.fromEntries([...document.querySelectorAll('#stages tbody tr[data-stage]')].map(r =>
    [r.dataset.stage, [...r.cells].slice(1, 4).map(c => c.textContent)]))"""
WORKERS = """[...document.querySelectorAll('#workers li')].map(li => ({
    url: li.dataset.url, partitions: li.dataset.partitions, answered: li.dataset.answered,
    chips: [...li.querySelectorAll('.partition')].map(c => c.textContent)}))"""

#: becomes a script in the page if a key or reason is ever inserted as HTML
HOSTILE = "<img src=x onerror=__xss=1>"


def test_dashboard_shows_counts_charts_images_dead_letters_and_workers(stack, samples, browser, tmp_path):
    started = time.monotonic()
    url = stack.web_url() + "/"
    bucket = stack.config.input_bucket
    before = wait_for(lambda: counts_if_ready(stack), timeout=SETTLE, what="the counts")
    dead_before = http_json(stack.web_url() + "/stats/")["dead_letters"]

    browser.open(url)
    browser.wait(DIGITS, lambda shown: sum(shown) >= before.total(), what="the page to show the counts so far")

    # while the page polls: 20 images under names that need URL-encoding, an empty
    # object whose key is HTML, and a notification whose rejection reason quotes HTML
    run = f"dash-{time.time_ns():x}/"
    labels = tricky_copies(samples[:20], tmp_path / "good")
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / f"{HOSTILE}.png").write_bytes(b"")
    upload_files(stack, [tmp_path / "good"], prefix=run)
    upload_files(stack, [hostile], prefix=run)
    produce(stack, stack.settings.events_topic, [(b"junk", json.dumps({"Records": f"{run} {HOSTILE}"}).encode())])
    expected = before + Counter(labels.values())

    # the bars reach the uploaded number, and the total with them
    browser.wait(DIGITS, lambda shown: shown == [expected[d] for d in range(10)], what=f"the bars to show {expected}")
    assert browser.evaluate("document.getElementById('total').dataset.value") == str(expected.total())

    # images/s: a line with points, and the burst seen while the page was open
    rate = browser.wait(SERIES % "rate-chart", lambda s: s and s[0]["points"] >= 2 and s[0]["max"] > 0,
                        what="the images/s chart to draw the upload")
    assert rate[0]["d"].startswith("M") and rate[0]["d"].count("L") >= 1
    assert browser.evaluate("document.querySelectorAll('#rate-chart path.area').length") >= 1
    latency = browser.wait(SERIES % "latency-chart", lambda s: {x["series"] for x in s} == {"p50", "p99"}
                           and all(x["points"] >= 1 and x["max"] > 0 for x in s),
                           what="the latency chart to draw end-to-end p50 / p99")
    assert latency[0]["d"].startswith("M")
    assert " / " in browser.evaluate("document.getElementById('e2e').textContent")

    # every stage's current p50 / p99
    stages = browser.wait(STAGES, lambda s: "end_to_end" in s, what="the stages table")
    assert {"s3_get", "transform", "batch_wait", "predict", "archive", "end_to_end"} <= stages.keys(), stages
    assert all(p50.endswith("s") and p99.endswith("s") and int(n.replace(",", "")) > 0 for p50, p99, n in stages.values()), stages

    # the latest images: a thumbnail (a decoded 28x28 PNG) with its digit and confidence
    objects = {f"s3://{bucket}/{run}{key}": label for key, label in labels.items()}
    shown = browser.wait(IMAGES, lambda figs: objects.keys() <= {f["object"] for f in figs if f["width"] == 28},
                         what="thumbnails of the uploaded images")
    for figure in shown:
        if figure["object"] in objects:
            assert figure["digit"] == objects[figure["object"]], figure
            assert figure["src"].startswith("data:image/png;base64,"), figure
            assert figure["text"].startswith(str(figure["digit"])) and figure["text"].endswith("%"), figure

    # the dead letters, hostile text shown literally and never run
    hostile_object = f"s3://{bucket}/{run}{HOSTILE}.png"

    def ours(rows: list[dict]) -> dict[str, dict] | None:
        found = {"empty": [r for r in rows if r["object"] == hostile_object],
                 "event": [r for r in rows if r["stage"] == "events" and run in r["cells"][3]]}
        return {name: hits[0] for name, hits in found.items()} if all(found.values()) else None

    rows = browser.wait(DEAD_LETTERS, ours, what="the hostile dead letters in the table")
    empty, event = ours(rows)["empty"], ours(rows)["event"]
    time_cell, stage, kind, reason, shown_object = empty["cells"]
    assert (stage, kind, shown_object) == ("preprocess", "empty_image", hostile_object), empty
    assert reason and ":" in time_cell, empty
    assert event["kind"] == "invalid_event" and event["cells"][4] == "—", event
    assert HOSTILE in event["cells"][3], event
    for row in (empty, event):
        assert row["elements"] == 0, row
    assert browser.evaluate("typeof window.__xss") == "undefined"
    assert browser.evaluate("document.images.length === document.querySelectorAll('#images img').length "
                            "&& document.scripts.length === 1")
    browser.wait("Number(document.getElementById('dead').dataset.value)", lambda n: n >= dead_before + 2,
                 what="the dead-letter total")

    # the workers and the partitions each holds
    workers = browser.wait(WORKERS, lambda w: len(w) == 1 and w[0]["partitions"], what="the workers list")
    assert workers[0]["url"].rstrip("/") == stack.web_url()
    assert workers[0]["answered"] == "true"
    assert sorted(int(p) for p in workers[0]["partitions"].split(",")) == list(range(stack.config.partitions))
    assert workers[0]["chips"] == workers[0]["partitions"].split(",")
    assert browser.evaluate("document.getElementById('status').className") == "ok"

    # no script error, and nothing fetched from anywhere but the worker (no CDN, no fonts)
    errors = [e["params"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
    assert not errors, errors
    fetched = {e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"}
    assert fetched and all(u.startswith((stack.web_url() + "/", "data:")) for u in fetched), fetched

    shot = browser.screenshot(tmp_path / "dashboard.png")
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    print(f"dashboard screenshot: {shot} (checked in {time.monotonic() - started:.1f} s)")
