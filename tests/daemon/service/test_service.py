"""The service and render worker around a fake engine that returns known synthetic audio:
exact cuts, sidecars, reply shapes, worker survival after engine errors. Real UDP, in-process
(the service runs in a thread; signals are exercised by the end-to-end tests)."""

import json
import time
import typing

import numpy as np
import pytest
import soundfile as sf
from fake_engines import ClickEngine, capabilities
from inprocess import start_service, stop_service

from latentloop_bridge.client import Client, RenderFailed
from latentloop_bridge.commands import Command
from latentloop_daemon.engine import RenderResult
from latentloop_daemon.errors import OutputError, RenderCancelled
from latentloop_daemon.files import writer

RATE = 44100
WINDOW = RATE * 10


class FakeEngine:
    """Audio [B, 2, WINDOW]: channel 0 is a ramp n / WINDOW, channel 1 its negative, batch b adds
    b; ``boom`` in the prompt raises, ``slow`` steps until cancelled."""

    def __init__(self) -> None:
        self.requests = []
        self.capabilities = capabilities("fake", WINDOW, default_steps=3)

    def render(self, request, on_step=None, should_cancel=None):
        self.requests.append(request)
        if "boom" in request.prompt:
            raise RuntimeError("synthetic engine failure")
        steps = 10_000 if "slow" in request.prompt else (request.steps or 3)
        for i in range(1, steps + 1):
            if on_step:
                on_step(i, steps, 1.0 / i)
            if should_cancel and should_cancel():
                raise RenderCancelled(f"cancelled at step {i}/{steps}")
            if "slow" in request.prompt:
                time.sleep(0.01)
        ramp = (np.arange(WINDOW, dtype=np.float32) / WINDOW)[None]
        audio = np.stack([np.concatenate([ramp + b, -ramp - b]) for b in range(request.batch_size)])
        return RenderResult(
            0.25 * audio.astype(np.float32), RATE, request.seed or 5, {"steps": steps}
        )

    def close(self) -> None:
        pass


def _start(tmp_path, engine=None, **render):
    overrides = {"render.format": "float", **{f"render.{k}": v for k, v in render.items()}}
    engine = engine or FakeEngine()
    svc, thread = start_service(tmp_path, lambda: engine, **overrides)
    svc.engine = engine
    return svc, thread


_stop = stop_service


@pytest.fixture
def service(tmp_path):
    """Loop processing that leaves samples untouched: hard cut, no loudness gain."""
    svc, thread = _start(tmp_path, crossfade_ms=0.0, normalize=False, tempo_check=False)
    yield svc
    _stop(svc, thread)


@pytest.fixture
def looping_service(tmp_path):
    """Default loop processing: seam crossfade, loudness normalisation, tempo check."""
    svc, thread = _start(tmp_path)
    yield svc
    _stop(svc, thread)


def _client(svc):
    return Client("127.0.0.1", svc.server.bound_address[1], timeout=5)


def test_loop_is_cut_to_the_exact_frame_count_with_sidecar(service, tmp_path):
    with _client(service) as c:
        done = c.render_and_wait("ramp", bpm=93, bars=3, beats_per_bar=3, seed=11, timeout=10)
    (d,) = done
    n = round(3 * 3 * 60 * RATE / 93)
    data, rate = sf.read(d.path, dtype="float32")
    assert rate == RATE and data.shape == (n, 2)
    expected = 0.25 * np.arange(n, dtype=np.float32) / WINDOW  # the first n samples, untouched
    np.testing.assert_array_equal(data[:, 0], expected.astype(np.float32))
    assert (d.bpm, d.bars, d.seed, d.variation) == (93.0, 3.0, 11, 0)
    assert abs(d.seconds - n / RATE) < 1e-6
    side = json.loads((tmp_path / (d.path.rsplit("/", 1)[1][:-4] + ".json")).read_text())
    assert side["frames"] == n and side["request"]["bpm"] == 93 and side["seed"] == 11
    assert side["actual_bpm"] == pytest.approx(93, rel=1e-5)
    assert service.engine.requests[-1].seconds_total == pytest.approx(n / RATE + 2.0)  # padding


def test_variations_and_seconds_form(service):
    with _client(service) as c:
        done = c.render_and_wait("ramp", seconds=1.5, variations=3, seed=2, timeout=10)
    assert [d.variation for d in done] == [0, 1, 2]
    assert len({d.path for d in done}) == 3 and {d.seed for d in done} == {2}
    for d in done:
        data, _ = sf.read(d.path, dtype="float32")
        assert data.shape == (66150, 2)
        np.testing.assert_allclose(data[0], [0.25 * d.variation, -0.25 * d.variation])


def test_engine_failure_is_reported_and_the_worker_survives(service):
    with _client(service) as c:
        with pytest.raises(RenderFailed) as e:
            c.render_and_wait("boom", seconds=1, timeout=10)
        assert e.value.code == "engine" and "synthetic engine failure" in e.value.message
        assert c.render_and_wait("fine", seconds=1, timeout=10)


def test_too_long_for_the_model_is_invalid(service):
    with _client(service) as c, pytest.raises(RenderFailed) as e:
        c.render_and_wait("long", bpm=60, bars=3, timeout=10)  # 12 s + 2 s padding > 10 s
    assert e.value.code == "invalid" and "longer than fake renders" in e.value.message


def test_cancel_running_job(service):
    with _client(service) as c:
        rid = c.render("slow", seconds=1)
        c.wait_for(rid, ["/latentloop/progress"], timeout=5)
        c.cancel(rid)
        with pytest.raises(RenderFailed) as e:
            c.wait_for(rid, ["/latentloop/done"], timeout=5)
        assert e.value.code == "cancelled" and "cancelled at step" in e.value.message
    status = service.queue.snapshot()
    assert status["running"] is None and status["history"][-1]["state"] == "cancelled"


def test_default_loop_processing_is_recorded(looping_service, tmp_path):
    with _client(looping_service) as c:
        (d,) = c.render_and_wait("ramp", bpm=120, bars=2, key="F minor", seed=4, timeout=10)
    n = round(2 * 4 * 60 * RATE / 120)
    data, _ = sf.read(d.path, dtype="float32")
    assert data.shape == (n, 2)
    side = json.loads((tmp_path / (d.path.rsplit("/", 1)[1][:-4] + ".json")).read_text())
    assert side["final_prompt"] == "ramp, 120 BPM, F minor"
    assert side["seam"]["crossfade_ms"] == pytest.approx(20, abs=0.05)
    assert side["loudness"]["target_lufs"] == -14.0 and side["key"] == "F minor"
    assert side["seconds_total_conditioning"] == pytest.approx(n / RATE + 2.0)
    request = looping_service.engine.requests[-1]
    assert request.prompt == "ramp, 120 BPM, F minor"
    assert request.seconds_total == pytest.approx(n / RATE + 2.0)


def test_status_reports_a_jobs_state_and_path(service):
    with _client(service) as c:
        (d,) = c.render_and_wait("ramp", seconds=1, request_id=42, timeout=10)
        c.send("/latentloop/status", [42])
        _, args = c.wait_for(42, ["/latentloop/status.reply"], timeout=5)
        assert args[1] == "ready" and args[6:8] == ["done", d.path]
        c.send("/latentloop/status", [43])
        _, args = c.wait_for(43, ["/latentloop/status.reply"], timeout=5)
        assert args[6:8] == ["", ""]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bpm": 120, "bars": 2.3}, "whole number of beats"),
        ({"bpm": 120, "bars": 1, "key": "H minor"}, "key: cannot read a key"),
    ],
)
def test_requests_that_cannot_make_a_loop_fail_before_rendering(service, options, message):
    before = len(service.engine.requests)
    with _client(service) as c, pytest.raises(RenderFailed) as e:
        c.render_and_wait("ramp", timeout=10, **options)
    assert e.value.code == "invalid" and message in e.value.message
    assert len(service.engine.requests) == before  # refused before the model ran


def test_our_temp_files_are_removed_at_start(tmp_path):
    """The folder lock means no other daemon writes here: every temp file of ours is a leftover
    of a killed process, however fresh; other tools' files stay."""
    import os

    stale = tmp_path / ".latentloop-abc.tmp"
    fresh = tmp_path / ".latentloop-def.tmp"
    foreign = tmp_path / ".other-tool-def.tmp"
    for path in (stale, fresh, foreign):
        path.write_bytes(b"half a file")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    svc, thread = _start(tmp_path)
    try:
        assert not stale.exists() and not fresh.exists() and foreign.exists()
    finally:
        _stop(svc, thread)


def test_every_request_type_has_a_handler(service):
    assert set(service.handlers.commands) == set(typing.get_args(Command))


def test_a_write_failure_is_io_and_the_next_request_succeeds(service, monkeypatch, tmp_path):
    real = writer.write_clip
    calls = []

    def full_disk_on_first(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OutputError("cannot write x.wav: No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "write_clip", full_disk_on_first)
    with _client(service) as c:
        with pytest.raises(RenderFailed) as e:
            c.render_and_wait("ramp", seconds=1, timeout=10)
        assert (e.value.command, e.value.code) == ("render", "io")
        assert e.value.message == "cannot write x.wav: No space left on device"
        (d,) = c.render_and_wait("ramp", seconds=1, timeout=10)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == sorted(
        [d.path.rsplit("/", 1)[1], d.path.rsplit("/", 1)[1][:-4] + ".json"]
    )


def test_tempo_rerolls_are_announced_with_retry(tmp_path):
    engine = ClickEngine([137, 120])
    svc, thread = _start(tmp_path, engine=engine, max_rerolls=2)
    try:
        with _client(svc) as c:
            rid = c.render("drums", bpm=120, bars=2, seed=8)
            address, args = c.wait_for(rid, ["/latentloop/retry"], timeout=10)
            assert address == "/latentloop/retry" and args[:2] == [rid, 1]
            assert args[2] == pytest.approx(137, rel=0.01)
            _, done = c.wait_for(rid, ["/latentloop/done"], timeout=10)
        assert done[5] == "9" and abs(done[8]) < 1.0  # the re-roll's seed, on tempo
        assert [r.seed for r in engine.requests] == [8, 9]
    finally:
        _stop(svc, thread)
