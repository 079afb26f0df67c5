"""The microphone path for real: PulseAudio with a null sink whose monitor is the default source; paplay speaks a
recording into it and `edge-ser listen --device pulse` hears it through ALSA, PortAudio and sounddevice.

Skipped, with the reason, where the stack cannot run (CI installs it: pulseaudio, pulseaudio-utils,
libasound2-plugins, libportaudio2, and the mic extra).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

MISSING = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    if MISSING:
        pytest.skip(f"no audio stack here: {', '.join(MISSING)} missing (apt-get install pulseaudio pulseaudio-utils "
                    "libasound2-plugins libportaudio2)")
    if importlib.util.find_spec("sounddevice") is None:
        pytest.skip("the mic extra is not installed (pip install 'edge-ser[mic]')")
    env = dict(os.environ, PULSE_RUNTIME_PATH=str(tmp_path_factory.mktemp("pulse")))
    started = subprocess.run(["pulseaudio", "-D", "--exit-idle-time=-1", "-n", "--load=module-null-sink sink_name=room",
                              "--load=module-native-protocol-unix"], env=env, capture_output=True, text=True,
                             timeout=30)
    ready = started.returncode == 0 and any(
        subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0 or time.sleep(0.2)
        for _ in range(25))
    if not ready:
        pytest.skip(f"PulseAudio did not start here: {started.stderr.strip()[-200:]}")
    for command in (["pactl", "set-default-sink", "room"], ["pactl", "set-default-source", "room.monitor"]):
        subprocess.run(command, env=env, check=True, timeout=30)
    yield env
    subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)


def cli(*args, env=None, data: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "edge_ser.cli", *map(str, args)], env=env, input=data,
                          capture_output=True, text=data is None, timeout=120)


def test_listen_hears_a_recording_played_into_the_room(pulse, tmp_path):
    # The demo's own sentences, which it labels with confidence (on other speech its labels are near ties, and
    # the sound server's resampling to 44.1 kHz and back may tip them), with the energy rule: this tests the path.
    samples = Path(__file__).resolve().parent.parent / "models" / "demo" / "samples"
    speech = [sf.read(samples / name, dtype="float32")[0] for name in
              ("easy_high-rising.wav", "hard_pressed.wav", "easy_high-rising.wav")]
    gap = np.zeros(16000, np.float32)
    wav = tmp_path / "three.wav"
    sf.write(wav, np.concatenate([gap, speech[0], gap, speech[1], gap, speech[2], gap]), 16000)
    listener = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "listen", "--device", "pulse", "--json",
                                 "--vad", "energy"], env=pulse, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)  # started and recording
    subprocess.run(["paplay", str(wav)], env=pulse, check=True, timeout=60)
    time.sleep(1.5)  # the last pause: the end of the last sentence is decided
    listener.send_signal(signal.SIGTERM)
    out, err = listener.communicate(timeout=60)
    heard = [json.loads(line) for line in out.splitlines()]
    from_file = [json.loads(line) for line in cli("listen", wav, "--json", "--vad", "energy").stdout.splitlines()]
    assert listener.returncode == 130, err
    assert len(heard) == len(from_file) == 3, (heard, err)
    assert [r["label"] for r in heard] == [r["label"] for r in from_file]
    # the same spans, up to when the microphone began hearing the playback (the same lag for each)
    lags = np.array([h["start"] - f["start"] for h, f in zip(heard, from_file, strict=True)])
    assert np.ptp(lags) < 0.25, lags


def test_a_microphone_that_is_not_there_is_one_line_naming_those_that_are(pulse):
    r = cli("listen", "--device", "nope", env=pulse)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "no microphone 'nope'; input devices here:" in r.stderr and "'pulse'" in r.stderr


def test_the_page_shows_the_devices_own_microphone(pulse, tmp_path):
    """`serve --http ... --device pulse`: the device's microphone is classified on the device and every page that
    watches /ws/device gets its level, voice and emotion events (read-only), the same utterances as listen's."""
    import asyncio
    import importlib.util
    import re

    if importlib.util.find_spec("aiohttp") is None:
        pytest.skip("the web extra is not installed (pip install 'edge-ser[web]')")
    import aiohttp

    samples = Path(__file__).resolve().parent.parent / "models" / "demo" / "samples"
    speech = sf.read(samples / "easy_high-rising.wav", dtype="float32")[0]
    gap = np.zeros(16000, np.float32)
    wav = tmp_path / "one.wav"
    sf.write(wav, np.concatenate([gap, speech, gap]), 16000)
    server = subprocess.Popen([sys.executable, "-m", "edge_ser.cli", "serve", "--http", "127.0.0.1:0", "--device",
                               "pulse", "--vad", "energy"], env=pulse, stderr=subprocess.PIPE, text=True)
    try:
        url = next(m.group(1) for line in server.stderr if (m := re.search(r"page on http://(\S+)/", line)))

        async def watch() -> list[dict]:
            events: list[dict] = []
            async with aiohttp.ClientSession() as session, session.ws_connect(f"ws://{url}/ws/device") as ws:
                await asyncio.sleep(1.0)
                player = await asyncio.create_subprocess_exec("paplay", str(wav), env=pulse)
                await player.wait()
                try:
                    async with asyncio.timeout(5.0):
                        async for message in ws:
                            events.append(json.loads(message.data))
                            if events[-1]["type"] == "emotion":
                                break
                except TimeoutError:
                    pass
            return events

        events = asyncio.run(watch())
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0
    kinds = {e["type"] for e in events}
    assert {"level", "voice-started", "emotion"} <= kinds, kinds
    assert [e["data"]["label"] for e in events if e["type"] == "emotion"] == ["high-rising"]
    assert max(e["data"]["dbfs"] for e in events if e["type"] == "level") > -40  # the speech was heard
