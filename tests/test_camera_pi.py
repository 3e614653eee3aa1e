"""The Pi camera adapter (firmware/camera_pi.py) driven by a picamera2 test double."""

from __future__ import annotations

import itertools
import sys
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import fake_picamera2
import pytest

from firmware.camera_pi import (
    AF_MODE_CONTINUOUS,
    AF_MODE_MANUAL,
    CLOCK_STEP_NS,
    INSTALL_HINT,
    CameraError,
    PiCameraSettings,
    PiCameraSource,
    load_picamera2,
)
from firmware.frames import FrameSource

SMALL = PiCameraSettings(width=64, height=48, fps=10.0)


@pytest.fixture(autouse=True)
def _fresh_instances() -> None:
    fake_picamera2.Picamera2.instances.clear()


def _cam() -> fake_picamera2.Picamera2:
    return fake_picamera2.Picamera2.instances[-1]


def test_is_a_frame_source() -> None:
    src = PiCameraSource(SMALL, fake_picamera2.module())
    assert isinstance(src, FrameSource)
    assert src.size == (64, 48)
    assert src.fps == 10.0


def test_frames_size_bgr_and_times() -> None:
    before = time.time_ns() - time.monotonic_ns()
    with PiCameraSource(SMALL, fake_picamera2.module()) as src:
        after = time.time_ns() - time.monotonic_ns()
        frames = list(itertools.islice(src, 5))
        cam = _cam()
        offset = src.wall_offset_ns
    assert before - 1_000_000 <= offset <= after + 1_000_000
    for i, frame in enumerate(frames):
        request = cam.requests[i]
        ts = request._metadata["SensorTimestamp"]
        assert frame.size == (64, 48)
        assert frame.pixels.shape == (48, 64, 3)
        assert frame.bgr is True
        assert frame.index == i
        assert frame.source == "imx708"
        assert frame.t_mono_ns == ts
        expected = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round((ts + offset) / 1000))
        assert frame.t_utc == expected
        # the frame's own pixels, copied before the buffer went back (release overwrites it with 0xEE)
        assert int(frame.pixels[0, 0, 0]) == i % 256
        assert int(frame.pixels[0, 0, 2]) == 7
    gaps = [b.t_mono_ns - a.t_mono_ns for a, b in itertools.pairwise(frames)]
    assert gaps == [100_000_000] * 4
    # UTC is close to now: the offset was sampled from the same clocks
    assert abs((frames[0].t_utc - datetime.now(UTC)).total_seconds()) < 5


def test_every_request_released_even_when_consumer_stops_early() -> None:
    src = PiCameraSource(SMALL, fake_picamera2.module())
    with src:
        for n, _frame in enumerate(src):
            if n == 2:
                break
        cam = _cam()
    assert len(cam.requests) == 3
    assert all(r.released for r in cam.requests)
    assert cam.outstanding == 0
    assert cam.stopped and cam.closed


def test_long_run_never_holds_more_buffers_than_configured() -> None:
    # the fake raises when the application holds every buffer; 50 frames with 3 buffers pass
    with PiCameraSource(SMALL, fake_picamera2.module()) as src:
        frames = list(itertools.islice(src, 50))
        cam = _cam()
    assert len(frames) == 50
    assert cam.config is not None and cam.config["buffer_count"] == 3
    assert sum(r.released for r in cam.requests) == 50


def test_configuration_and_controls_on_af_camera() -> None:
    settings = PiCameraSettings(width=64, height=48, fps=12.5, max_exposure_us=3000, lens_position_dioptre=0.2)
    with PiCameraSource(settings, fake_picamera2.module()):
        cam = _cam()
        config = cam.camera_configuration()
        assert config["main"] == {"size": (64, 48), "format": "RGB888"}
        assert config["buffer_count"] == 3
        sent = cam.controls_log[0]
        assert sent["FrameDurationLimits"] == (80_000, 80_000)
        assert sent["ExposureTime"] == 3000
        assert sent["AfMode"] == AF_MODE_MANUAL
        assert sent["LensPosition"] == pytest.approx(0.2)
        assert sent == config["controls"]
        assert cam.started


def test_continuous_focus() -> None:
    settings = PiCameraSettings(width=64, height=48, focus="continuous")
    with PiCameraSource(settings, fake_picamera2.module()):
        sent = _cam().controls_log[0]
    assert sent["AfMode"] == AF_MODE_CONTINUOUS
    assert "LensPosition" not in sent


def test_fixed_focus_camera_gets_no_af_controls(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="firmware.camera_pi")
    with PiCameraSource(SMALL, fake_picamera2.module(af=False)) as src:
        frames = list(itertools.islice(src, 2))
        cam = _cam()
    assert len(frames) == 2
    for sent in cam.controls_log:
        assert "AfMode" not in sent and "LensPosition" not in sent
    assert "no autofocus" in caplog.text


def test_focus_fixed_sends_no_af_controls() -> None:
    with PiCameraSource(PiCameraSettings(width=64, height=48, focus="fixed"), fake_picamera2.module()):
        sent = _cam().controls_log[0]
    assert "AfMode" not in sent and "LensPosition" not in sent


def test_exposure_governor_pins_and_releases() -> None:
    with PiCameraSource(SMALL, fake_picamera2.module()) as src:
        cam = _cam()
        # bright: shutter at the cap with gain 1 -> back to AE; then AE wants 20 ms -> pinned at 4 ms
        cam.exposures_us = [4000, 1000, 20000, 4000]
        cam.gains = [1.0, 1.0, 1.0, 3.0]
        it = iter(src)
        next(it)
        assert not src.exposure_pinned
        assert cam.controls_log[-1] == {"ExposureTime": 0}
        next(it)
        assert not src.exposure_pinned
        next(it)
        assert src.exposure_pinned
        assert cam.controls_log[-1] == {"ExposureTime": 4000}
        sent = len(cam.controls_log)
        next(it)  # at the cap, gain 3: stays pinned, nothing sent
        assert src.exposure_pinned
        assert len(cam.controls_log) == sent
        it.close()


def test_old_libcamera_gets_ae_enable() -> None:
    with PiCameraSource(SMALL, fake_picamera2.module()):
        sent = _cam().controls_log[0]
    assert sent["AeEnable"] is True
    assert "ExposureTimeMode" not in sent and "AnalogueGainMode" not in sent


@pytest.mark.parametrize("af", [True, False])
def test_libcamera_05_gets_exposure_time_mode_and_no_ae_enable(af: bool) -> None:
    # libcamera >= 0.5 advertises no AeEnable: the fake, like picamera2, refuses a control that is
    # not advertised, so sending it would fail open() here as it does on the Pi
    mod = fake_picamera2.module(af=af, libcamera_05=True)
    with PiCameraSource(SMALL, mod) as src:
        cam = _cam()
        cam.exposures_us = [4000, 1000, 20000]
        cam.gains = [1.0, 1.0, 3.0]
        it = iter(src)
        next(it)  # gain 1 at the cap: shutter back to AE
        assert cam.controls_log[-1] == {"ExposureTimeMode": 0}
        next(it)
        next(it)  # AE wants 20 ms: pinned at the cap again
        assert cam.controls_log[-1] == {"ExposureTimeMode": 1, "ExposureTime": 4000}
        it.close()
    sent = cam.controls_log[0]
    assert "AeEnable" not in sent
    assert sent["ExposureTimeMode"] == 1 and sent["ExposureTime"] == 4000
    assert sent["AnalogueGainMode"] == 0  # the gain stays automatic
    assert ("AfMode" in sent) is af
    for controls in cam.controls_log:
        assert set(controls) <= set(cam.camera_controls)


def test_dropped_frames_show_as_index_gaps() -> None:
    with PiCameraSource(SMALL, fake_picamera2.module()) as src:
        _cam().skip = {2, 3}
        frames = list(itertools.islice(src, 4))
    assert [f.index for f in frames] == [0, 1, 4, 5]
    assert src.dropped == 2


def test_other_size_picked_is_an_error() -> None:
    class Picked(fake_picamera2.Picamera2):
        def configure(self, config: dict[str, object]) -> None:
            self.picked_size = (62, 48)
            super().configure(config)

    src = PiCameraSource(SMALL, SimpleNamespace(Picamera2=Picked))
    with pytest.raises(CameraError, match="picked 62x48"):
        src.open()
    assert _cam().closed


def test_no_camera() -> None:
    with pytest.raises(CameraError, match="no camera 0"):
        PiCameraSource(SMALL, fake_picamera2.module(cameras=False)).open()


class FakeClocks:
    """The wall and monotonic clocks the adapter reads: wall is always monotonic + ``offset_ns``
    (read together, so exactly), and a test moves ``offset_ns`` as chrony would."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns
        self._mono = 0

    def wall_ns(self) -> int:
        self._mono += 1000
        return self._mono + self.offset_ns

    def mono_ns(self) -> int:
        return self._mono


def _utc(ts_ns: int, offset_ns: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=round((ts_ns + offset_ns) / 1000))


def test_frame_utc_follows_a_clock_step_but_not_jitter() -> None:
    # an offline cold boot: the Pi's clock is a year behind until chrony steps it from GPS
    behind = 1_735_689_600 * 10**9 - time.monotonic_ns()  # 2025-01-01 at this monotonic time
    clocks = FakeClocks(behind)
    src = PiCameraSource(SMALL, fake_picamera2.module(), wall_ns=clocks.wall_ns, mono_ns=clocks.mono_ns)
    with src:
        it = iter(src)
        first = next(it)
        assert first.t_utc == _utc(first.t_mono_ns, behind)
        clocks.offset_ns = behind + CLOCK_STEP_NS // 2  # read jitter / slewing: frame times stay put
        second = next(it)
        assert second.t_utc == _utc(second.t_mono_ns, behind)
        assert src.clock_steps == 0
        stepped = behind + 365 * 86400 * 10**9  # chrony steps the clock a year forward
        clocks.offset_ns = stepped
        third, fourth = next(it), next(it)
        it.close()
    assert third.t_utc == _utc(third.t_mono_ns, stepped)
    assert fourth.t_utc == _utc(fourth.t_mono_ns, stepped)
    assert (third.t_utc - second.t_utc).total_seconds() == pytest.approx(365 * 86400 + 0.1, abs=1e-3)
    assert src.clock_steps == 1 and src.wall_offset_ns == stepped
    assert [f.t_mono_ns - first.t_mono_ns for f in (second, third, fourth)] == [100_000_000 * k for k in (1, 2, 3)]


def test_a_backward_step_is_followed_too() -> None:
    clocks = FakeClocks(1_800_000_000 * 10**9)
    src = PiCameraSource(SMALL, fake_picamera2.module(), wall_ns=clocks.wall_ns, mono_ns=clocks.mono_ns)
    with src:
        it = iter(src)
        next(it)
        clocks.offset_ns -= 2 * 10**9
        frame = next(it)
        it.close()
    assert frame.t_utc == _utc(frame.t_mono_ns, clocks.offset_ns) and src.clock_steps == 1


def test_load_picamera2_is_the_only_import(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = fake_picamera2.module()
    assert load_picamera2(mod) is mod
    fake = SimpleNamespace(Picamera2=fake_picamera2.Picamera2)
    monkeypatch.setitem(sys.modules, "picamera2", fake)
    assert load_picamera2() is fake
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(CameraError, match="python3-picamera2"):
        load_picamera2()


def test_missing_picamera2_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    src = PiCameraSource(SMALL)  # nothing imported yet
    with pytest.raises(CameraError) as info:
        src.open()
    assert str(info.value) == INSTALL_HINT
    assert "sudo apt install python3-picamera2" in str(info.value)
    assert "--system-site-packages" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0}, "fps"),
        ({"max_exposure_us": 0}, "max_exposure_us"),
        ({"fps": 500.0}, "does not fit"),
        ({"focus": "near"}, "focus"),
        ({"buffer_count": 1}, "buffer_count"),
        ({"width": 0}, "size"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(CameraError, match=match):
        PiCameraSettings(**kwargs)  # type: ignore[arg-type]


def test_close_is_idempotent() -> None:
    src = PiCameraSource(SMALL, fake_picamera2.module())
    src.open()
    src.close()
    src.close()
    assert _cam().closed
