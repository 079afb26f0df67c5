"""The page of `edge-ser serve --http`, in a real browser: Debian's chromium driven by Playwright, its microphone
a recording made here (Chromium's fake capture device plays it through getUserMedia, as a microphone would).

Every view is checked against the command line on the same input: the live view's utterances against
`edge-ser listen`, a chosen file against `edge-ser classify`, the model view against `edge-ser info`; the
browser's console must stay free of errors. Screenshots of each view go to $EDGE_SER_SCREENSHOTS (docs/images
for the README: `EDGE_SER_SCREENSHOTS=docs/images pytest tests/test_page.py`), else to a temporary folder.
The WebSocket and HTTP limits are checked with aiohttp's client against the same server.

Skipped, with the reason, where chromium, playwright or aiohttp is missing (CI installs all three).
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge_ser.classifier import DEFAULT_MODEL

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SAMPLES = DEFAULT_MODEL / "samples"
MISSING = [name for name, ok in (("chromium (apt-get install chromium)", Path(CHROMIUM).is_file()),
                                 ("playwright", importlib.util.find_spec("playwright") is not None),
                                 ("aiohttp (the web extra)", importlib.util.find_spec("aiohttp") is not None)) if not ok]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"no real browser here: {', '.join(MISSING)} missing")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "edge_ser.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def start_server(*args) -> tuple[subprocess.Popen, str]:
    """`edge-ser serve --http 127.0.0.1:0 ...` in a process of its own; (process, the page's URL)."""
    server = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", "--http", "127.0.0.1:0", "--vad",
                               "energy", *map(str, args)], stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"page on (http://\S+)", line)
        if found:
            return server, found.group(1)
    raise AssertionError(f"the server did not start: {server.wait(timeout=30)}")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    assert server.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Path:
    """The demo's sentences with a second of silence around each (its own sentences: it labels them surely)."""
    speech = [sf.read(SAMPLES / name, dtype="float32")[0] for name in
              ("easy_high-rising.wav", "hard_pressed.wav", "easy_high-rising.wav")]
    gap = np.zeros(16000, np.float32)
    path = tmp_path_factory.mktemp("page") / "three.wav"
    sf.write(path, np.concatenate([gap] + [x for s in speech for x in (s, gap)]), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def server():
    process, url = start_server()
    yield url
    stop_server(process)


@pytest.fixture(scope="module")
def browser(recording):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={recording}"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the page, its console watched: any error there fails the test."""
    tab = browser.new_page(viewport={"width": 1100, "height": 900})
    problems: list[str] = []
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.on("pageerror", lambda err: problems.append(str(err)))
    tab.goto(server)
    tab.wait_for_selector("body[data-ready=true]")
    tab.console_errors = problems  # a test that provokes an error removes the one it expects
    yield tab
    tab.close()
    assert problems == [], f"the browser's console had errors: {problems}"


def screenshot(tab, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EDGE_SER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"page-{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000
    return path


def test_the_live_view_shows_the_utterances_listen_finds_in_the_same_recording(page, recording, tmp_path):
    expected = [json.loads(line) for line in cli("listen", recording, "--vad", "energy", "--json").stdout.splitlines()]
    assert len(expected) == 3
    page.click("#start")
    assert page.get_attribute("#start", "aria-pressed") == "true"
    cards = page.locator(".utterance")
    cards.nth(2).wait_for(timeout=60_000)  # Chromium plays the file in real time: about 12 s
    shown = [cards.nth(i) for i in range(cards.count())][::-1]  # newest first on the page
    for card, want in zip(shown[:3], expected, strict=True):
        assert card.get_attribute("data-label") == want["label"]
        times = re.search(r"([\d.]+)-([\d.]+) s, exit (\d+)", card.inner_text())
        # the browser resamples its microphone to its own rate and back: the same utterances within 50 ms
        assert abs(float(times.group(1)) - want["start"]) < 0.05 and abs(float(times.group(2)) - want["end"]) < 0.05
        assert int(times.group(3)) == want["exit_layer"]
    assert page.locator("#timeline .segment").count() >= 3
    assert page.locator("#timeline .segment").first.inner_text() == expected[0]["label"]  # written, not only coloured
    screenshot(page, "live", tmp_path)
    page.click("#start")  # stop: the request ends, the microphone is released
    page.locator("#status").filter(has_text="stopped").wait_for(timeout=10_000)
    assert page.get_attribute("#start", "aria-pressed") == "false"


def test_a_chosen_file_is_classified_as_classify_does_with_every_exit(page, tmp_path):
    sample = SAMPLES / "hard_pressed.wav"
    expected = json.loads(cli("classify", sample, "--json").stdout)
    page.click("#tab-file")
    page.set_input_files("#file", str(sample))
    page.locator("#file-result").wait_for(state="visible", timeout=30_000)
    assert page.inner_text("#file-label").startswith(expected["label"])
    assert f"exit {expected['exit_layer']}" in page.inner_text("#file-summary")
    rows = page.locator("table.exits tr[data-exit]")
    assert [rows.nth(i).get_attribute("data-exit") for i in range(rows.count())] == ["3", "8", "10", "12"]
    assert page.locator("table.exits tr.stop").get_attribute("data-exit") == str(expected["exit_layer"])
    assert page.locator("#file-windows .column").count() == 1  # one window for a clip under 10 s
    screenshot(page, "file", tmp_path)
    page.set_input_files("#file", files=[{"name": "noise.wav", "mimeType": "audio/wav", "buffer": b"not audio"}])
    page.locator("#file-status.error").wait_for(timeout=10_000)
    assert "noise.wav: cannot decode audio" in page.inner_text("#file-status")  # named as the user named it
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 422 "
                                   "(Unprocessable Entity)"]  # the refusal, as the browser logs it; nothing else
    page.console_errors.clear()


def test_the_model_view_says_what_edge_ser_info_says(page, tmp_path):
    manifest = json.loads(cli("info", "--json").stdout)
    page.click("#tab-model")
    assert page.locator("#view-model").is_visible() and not page.locator("#view-live").is_visible()
    text = page.inner_text("#model-info")
    assert ", ".join(manifest["labels"]) in text and manifest["description"] in text
    rows = page.locator("#exits-table tr[data-exit]")
    assert [rows.nth(i).get_attribute("data-exit") for i in range(rows.count())] == [str(e["layer"]) for e in
                                                                                      manifest["exits"]]
    for i, e in enumerate(manifest["exits"]):
        assert f"{e['path_parameters']:,}" in rows.nth(i).inner_text()
        assert f"{100 * e['dev_uar']:.1f}%" in rows.nth(i).inner_text()
    rule = manifest["policy"]["measures"][manifest["policy"]["default"]]
    assert f"max_prob >= {rule['threshold']:.3f}" in text
    assert "the encoder runs while audio arrives" in text
    assert f"precision\n{manifest['default_precision']} (the export machine's default)" in text  # no calibrate here
    screenshot(page, "model", tmp_path)


def test_views_are_reached_by_keyboard_and_read_on_a_phone(browser, server, tmp_path):
    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone.goto(server)
    phone.wait_for_selector("body[data-ready=true]")
    phone.focus("#tab-live")
    phone.keyboard.press("ArrowRight")
    assert phone.get_attribute("#tab-file", "aria-selected") == "true" and phone.locator("#view-file").is_visible()
    phone.keyboard.press("ArrowRight")
    assert phone.locator("#view-model").is_visible()
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the phone's screen
    screenshot(phone, "phone", tmp_path)
    phone.close()


# ---- limits, over the same endpoints without a browser ---------------------------------------------------------

def exchange(url: str, *messages, **options) -> list[dict]:
    """_socket_exchange on a thread of its own (Playwright's sync API holds this thread's event loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _socket_exchange(url, *messages, **options)).result()


async def _socket_exchange(url: str, *messages, wait_for: str | None = None, seconds: float = 10.0) -> list[dict]:
    import aiohttp

    events: list[dict] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http", "ws") + "ws") as ws:
        for message in messages:
            await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
        try:
            async with asyncio.timeout(seconds):
                async for reply in ws:
                    if reply.type != aiohttp.WSMsgType.TEXT:
                        break
                    events.append(json.loads(reply.data))
                    if wait_for and events[-1]["type"] == wait_for:
                        break
        except TimeoutError:
            pass
        else:
            if ws.closed:
                events.append({"type": "closed", "code": ws.close_code})
    return events


def test_the_socket_is_a_service_client_bound_by_the_same_limits(server):
    start = json.dumps({"type": "audio-start", "data": {"rate": 16000, "width": 2, "channels": 1}})
    stop = json.dumps({"type": "audio-stop", "data": {}})
    speech = (sf.read(SAMPLES / "easy_high-rising.wav", dtype="int16")[0]).tobytes()
    gap = bytes(32000)
    events = exchange(server, json.dumps({"type": "describe"}), start, gap, speech, gap, stop,
                                          wait_for="emotion-stop")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "info" and "voice-started" in kinds and kinds[-1] == "emotion-stop"
    assert [e["data"]["label"] for e in events if e["type"] == "emotion"] == ["high-rising"]
    bad = exchange(server, "{not json", json.dumps({"type": "ping", "data": {"text": "x"}}),
                   wait_for="pong")
    assert bad[0]["data"]["code"] == "bad-event" and bad[-1]["type"] == "pong"  # refused, and the socket goes on
    chunk_alone = exchange(server, gap, json.dumps({"type": "ping"}), wait_for="pong")
    assert "outside a request" in chunk_alone[0]["data"]["text"]
    huge = exchange(server, start, bytes(2 * 1024 * 1024))  # over the 1 MiB payload bound
    # closed, nothing answered: WebSocket's "message too big" (1009), or, when the server's close lands while the
    # client is still sending, an abnormal closure (1006) as the client sees it
    assert len(huge) == 1 and huge[0]["type"] == "closed" and huge[0]["code"] in (1009, 1006), huge
    assert exchange(server, json.dumps({"type": "ping"}), wait_for="pong")[-1]["type"] == "pong"  # serving on


def test_a_closed_tab_releases_its_place(recording):
    """With one client allowed, a page that leaves mid-utterance frees the place for the next one as soon as its
    request is ended (as audio-stop would), not after the idle timeout."""
    process, url = start_server("--max-clients", "1")
    try:
        start = json.dumps({"type": "audio-start", "data": {"rate": 16000, "width": 2, "channels": 1}})
        half = (sf.read(SAMPLES / "easy_high-rising.wav", dtype="int16")[0][:20000]).tobytes()
        exchange(url, start, half, seconds=0.5)  # leaves without audio-stop
        began = time.monotonic()
        while (again := exchange(url, json.dumps({"type": "ping"}), wait_for="pong"))[0]["type"] != "pong":
            assert again[0]["data"]["code"] == "busy" and time.monotonic() - began < 5, again  # not the 30 s idle wait
            time.sleep(0.1)
    finally:
        stop_server(process)


def test_uploads_and_addresses_are_checked_where_they_enter(server, tmp_path):
    import urllib.error
    import urllib.request

    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16000 * 121, np.int16), 16000)  # past the server's 120 s clip limit
    for body, status, message in ((long.read_bytes(), 422, "classifies at most 120 s"), (b"", 400, "request body")):
        request = urllib.request.Request(server + "api/classify", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == status and message in json.loads(refused.value.read())["error"]
    for args, message in ((["--http", "0.0.0.0:8080"], "reachable from other hosts"),
                          (["--http", "localhost"], "give HOST:PORT"),
                          (["--device", "pulse"], "give --http HOST:PORT too")):
        done = cli("serve", *args)
        assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_the_page_and_the_wyoming_socket_share_one_process(tmp_path):
    """--http beside --uri: one model, both ways in, each announced on stderr."""
    socket_path = tmp_path / "edge-ser.sock"
    server = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", "--uri", f"unix://{socket_path}",
                               "--http", "127.0.0.1:0", "--vad", "energy"], stderr=subprocess.PIPE, text=True)
    try:
        ready, page = server.stderr.readline(), server.stderr.readline()
        assert ready.strip() == f"edge-ser: ready on unix://{socket_path}" and socket_path.exists()
        url = re.search(r"page on (http://\S+)", page).group(1)
        assert exchange(url, json.dumps({"type": "ping"}), wait_for="pong")[-1]["type"] == "pong"
    finally:
        stop_server(server)
