"""The Raspberry Pi camera as a ``FrameSource`` (picamera2). See docs/camera.md.

``picamera2`` comes from apt (``python3-picamera2``) and imports libcamera, so it cannot be
imported off a Pi: this module is the only one that imports it, in ``load_picamera2()`` (called
by ``PiCameraSource.open()``, and early by ``sousveil run`` for a clear error before the model
loads). Tests pass a test double with picamera2's API shape as ``picamera2_module``
(tests/fake_picamera2.py).

Per frame: one ``captured_request()``; the pixels (copied) and the metadata come from that one
request, and the buffer goes back to the camera when the ``with`` block ends.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from firmware.frames import NS_PER_S, Frame, FrameSourceError, Pixels, ns_to_timedelta

log = logging.getLogger(__name__)

Focus = Literal["far", "continuous", "fixed"]
FOCUS_MODES: tuple[Focus, ...] = ("far", "continuous", "fixed")

# libcamera's AfModeEnum: Manual = 0, Auto = 1, Continuous = 2
AF_MODE_MANUAL = 0
AF_MODE_CONTINUOUS = 2
# libcamera's ExposureTimeModeEnum (libcamera >= 0.5): Auto = 0, Manual = 1
EXPOSURE_TIME_MODE_AUTO = 0
EXPOSURE_TIME_MODE_MANUAL = 1
# libcamera's AnalogueGainModeEnum (libcamera >= 0.5): Auto = 0, Manual = 1
ANALOGUE_GAIN_MODE_AUTO = 0
# the gain at or below which a pinned shutter is handed back to AE (the scene is bright enough)
RELEASE_GAIN = 1.05
# a change of the wall - monotonic offset larger than this is a clock step (chrony setting the
# clock from GPS or NTP), not jitter between the two clock reads: frame UTC follows it
CLOCK_STEP_NS = 50_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

INSTALL_HINT = (
    "picamera2 is not installed (the on-bike camera: on Raspberry Pi OS `sudo apt install python3-picamera2` "
    "and create the venv with --system-site-packages); off a Pi use camera.source = 'video' or 'images' "
    "with a path"
)


class CameraError(FrameSourceError):
    """The Pi camera cannot start: picamera2 missing, no camera, bad settings, mode not available."""


def load_picamera2(module: Any = None) -> Any:
    """``module`` when given (a test double), else ``import picamera2`` (Pi only).

    The one place picamera2 is imported. Raises ``CameraError`` with the install hint when it
    is missing (off a Pi, or a venv made without --system-site-packages).
    """
    if module is not None:
        return module
    try:
        return importlib.import_module("picamera2")
    except ImportError as exc:
        raise CameraError(INSTALL_HINT) from exc


@dataclass(frozen=True)
class PiCameraSettings:
    """How the Pi camera is driven on a moving bike.

    ``max_exposure_us`` caps the shutter against motion blur (4 ms: ~3 cm of travel at
    25 km/h). ``focus``: "far" fixes the lens at ``lens_position_dioptre`` (0.1 dioptre = 10 m,
    Camera Module 3), "continuous" lets AF hunt, "fixed" sends no AF controls at all. Fixed-focus
    cameras (Module 2, HQ with a manual lens) skip AF whatever ``focus`` says.
    """

    width: int = 1920
    height: int = 1080
    fps: float = 10.0
    max_exposure_us: int = 4000
    focus: Focus = "far"
    lens_position_dioptre: float = 0.1
    buffer_count: int = 3
    camera_index: int = 0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"size: must be positive, got {self.width}x{self.height}")
        if not self.fps > 0:
            raise CameraError(f"fps: must be > 0, got {self.fps}")
        if self.max_exposure_us <= 0:
            raise CameraError(f"max_exposure_us: must be > 0, got {self.max_exposure_us}")
        if self.max_exposure_us > self.frame_duration_us:
            raise CameraError(
                f"max_exposure_us: {self.max_exposure_us} µs does not fit in one frame at {self.fps} fps "
                f"({self.frame_duration_us} µs)"
            )
        if self.focus not in FOCUS_MODES:
            raise CameraError(f"focus: must be one of {', '.join(FOCUS_MODES)}, got {self.focus!r}")
        if self.lens_position_dioptre < 0:
            raise CameraError(f"lens_position_dioptre: must be >= 0, got {self.lens_position_dioptre}")
        if self.buffer_count < 2:
            raise CameraError(f"buffer_count: must be >= 2, got {self.buffer_count}")

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def frame_duration_us(self) -> int:
        """One frame period in µs (what ``FrameDurationLimits`` is set to, both ends)."""
        return round(1_000_000 / self.fps)


class PiCameraSource:
    """Frames from the Pi camera (picamera2), BGR (``RGB888`` is BGR in memory).

    ``t_mono_ns`` is the request's ``SensorTimestamp`` (the ``time.monotonic_ns()`` clock);
    ``t_utc`` is that plus the offset ``time_ns() - monotonic_ns()``. The offset is sampled when
    the camera starts and again with every frame; it is replaced only when it moved by more than
    ``CLOCK_STEP_NS`` (a clock step: chrony setting the clock from GPS after an offline cold
    boot), so read jitter never moves frame times and a step is followed at once (``clock_steps``
    counts them). ``wall_ns``/``mono_ns`` stand for the two clocks (tests pass fakes).
    ``index`` is estimated from the timestamp gaps, so frames the camera dropped show as gaps;
    ``dropped`` counts them. ``dropped`` and ``clock_steps`` go to the status topic
    (``camera_dropped``, ``camera_clock_steps``; firmware/run_cli.py).

    >>> with PiCameraSource(PiCameraSettings()) as cam:  # doctest: +SKIP
    ...     for frame in cam:
    ...         detector.detect(frame.pixels, bgr=frame.bgr)
    """

    def __init__(
        self,
        settings: PiCameraSettings | None = None,
        picamera2_module: Any = None,
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        mono_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.settings = settings if settings is not None else PiCameraSettings()
        self._module = picamera2_module
        self._wall_ns, self._mono_ns = wall_ns, mono_ns
        self._cam: Any = None
        self._size = self.settings.size
        self.wall_offset_ns = 0  # sampled when the camera starts
        self.clock_steps = 0
        self.frames = 0
        self.dropped = 0
        self.exposure_pinned = False
        self.model = ""
        self._controls: Mapping[str, Any] = {}

    # -- FrameSource ---------------------------------------------------------------------------

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float | None:
        return self.settings.fps

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Import picamera2, configure the camera, set the controls and start it (idempotent)."""
        if self._cam is not None:
            return
        module = load_picamera2(self._module)
        s = self.settings
        cameras = list(module.Picamera2.global_camera_info())
        if len(cameras) <= s.camera_index:
            raise CameraError(f"no camera {s.camera_index}: {len(cameras)} camera(s) found (is the ribbon seated?)")
        try:
            cam = module.Picamera2(s.camera_index)
        except (RuntimeError, OSError, IndexError) as exc:
            raise CameraError(f"camera {s.camera_index} cannot be opened: {exc}") from exc
        try:
            self._configure(cam)
        except BaseException:
            cam.close()
            raise
        self._cam = cam

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()
        log.info("camera closed after %d frames (%d dropped)", self.frames, self.dropped)

    def __iter__(self) -> Iterator[Frame]:
        self.open()
        period_ns = NS_PER_S / self.settings.fps
        last_ts: int | None = None
        index = 0
        while self._cam is not None:
            with self._cam.captured_request() as request:
                # pixels and metadata from the SAME request; make_array already copies the buffer
                # out (picamera2's make_buffer is np.array(mapped buffer)), so it may go back now
                pixels: Pixels = request.make_array("main")
                metadata: Mapping[str, Any] = request.get_metadata()
            ts = int(metadata["SensorTimestamp"])
            if last_ts is not None:
                if ts <= last_ts:
                    log.warning("camera: frame at %d ns is not after the previous one, skipped", ts)
                    continue
                step = max(1, round((ts - last_ts) / period_ns))
                self.dropped += step - 1
                index += step
            last_ts = ts
            self.frames += 1
            self._govern_exposure(metadata)
            offset = self._follow_clock()
            yield Frame(
                pixels=pixels,
                bgr=True,
                t_mono_ns=ts,
                t_utc=EPOCH + ns_to_timedelta(ts + offset),
                index=index,
                source=self.model or "picamera2",
            )

    # -- internals -----------------------------------------------------------------------------

    def _configure(self, cam: Any) -> None:
        s = self.settings
        self.model = str(cam.camera_properties.get("Model", "camera"))
        self._controls = dict(cam.camera_controls)
        controls = self._start_controls()
        config = cam.create_video_configuration(
            main={"size": s.size, "format": "RGB888"},
            controls=controls,
            buffer_count=s.buffer_count,
        )
        cam.configure(config)
        picked = cam.camera_configuration()
        main = picked["main"]
        size = (int(main["size"][0]), int(main["size"][1]))
        if size != s.size:
            raise CameraError(
                f"camera {self.model}: asked for {s.width}x{s.height}, libcamera picked {size[0]}x{size[1]}"
            )
        if main.get("format", "RGB888") != "RGB888":
            raise CameraError(f"camera {self.model}: asked for RGB888, got {main.get('format')}")
        sensor = picked.get("sensor") or {}
        log.info(
            "camera %s: main %dx%d RGB888 at %.1f fps, sensor mode %s %s, %d buffers",
            self.model,
            size[0],
            size[1],
            s.fps,
            sensor.get("output_size"),
            sensor.get("bit_depth"),
            s.buffer_count,
        )
        self._size = size
        cam.set_controls(controls)  # again after configure: some controls only stick on a configured camera
        cam.start()
        self.wall_offset_ns = self._sample_offset()
        log.info("camera started; wall - monotonic offset %d ns", self.wall_offset_ns)

    def _sample_offset(self) -> int:
        return self._wall_ns() - self._mono_ns()

    def _follow_clock(self) -> int:
        """The wall - monotonic offset for this frame: re-sampled, replaced only on a step."""
        now = self._sample_offset()
        if abs(now - self.wall_offset_ns) > CLOCK_STEP_NS:
            step_s = (now - self.wall_offset_ns) / 1e9
            self.wall_offset_ns = now
            self.clock_steps += 1
            log.warning("camera: the wall clock stepped by %+.3f s (set by chrony/NTP?); frame UTC follows", step_s)
        return self.wall_offset_ns

    def _start_controls(self) -> dict[str, Any]:
        s = self.settings
        duration = s.frame_duration_us
        controls: dict[str, Any] = {"FrameDurationLimits": (duration, duration)}
        # automatic gain (and AE): libcamera >= 0.5 has per-parameter modes and no AeEnable (or one
        # only kept as a wrapper over the modes, which must not fight the manual shutter below);
        # older libcamera has AeEnable. A control the camera does not advertise is never sent:
        # picamera2 refuses it ("Control ... is not advertised by libcamera").
        if "ExposureTimeMode" in self._controls:
            if "AnalogueGainMode" in self._controls:
                controls["AnalogueGainMode"] = ANALOGUE_GAIN_MODE_AUTO
        elif "AeEnable" in self._controls:
            controls["AeEnable"] = True
        # start with the shutter pinned at the cap (no blurred first frames while AE converges)
        controls.update(self._shutter_controls(s.max_exposure_us))
        self.exposure_pinned = True
        if "AeExposureMode" in self._controls:
            controls["AeExposureMode"] = 1  # libcamera ExposureShort: the tuning's short-shutter profile
        if s.focus == "fixed":
            log.info("camera %s: focus 'fixed': no AF controls sent", self.model)
        elif "AfMode" not in self._controls:
            log.info("camera %s has no autofocus (fixed-focus lens): focus %r ignored", self.model, s.focus)
        elif s.focus == "far":
            controls["AfMode"] = AF_MODE_MANUAL
            controls["LensPosition"] = s.lens_position_dioptre
            log.info("camera %s: lens fixed at %.2f dioptre (far)", self.model, s.lens_position_dioptre)
        else:
            controls["AfMode"] = AF_MODE_CONTINUOUS
            log.info("camera %s: continuous autofocus", self.model)
        return controls

    def _govern_exposure(self, metadata: Mapping[str, Any]) -> None:
        """Keep the shutter at or under ``max_exposure_us``; the gain stays automatic.

        libcamera has no "maximum shutter" control: AE may use the whole frame duration (100 ms
        at 10 fps). So when AE goes over the cap, the shutter is pinned at the cap (manual
        ExposureTime, AE then adjusts only the gain); when the gain falls to ~1 the scene is
        bright enough for a shorter shutter, and the shutter goes back to AE.
        """
        cap = self.settings.max_exposure_us
        exposure, gain = metadata.get("ExposureTime"), metadata.get("AnalogueGain")
        if exposure is None or self._cam is None:
            return
        if not self.exposure_pinned and int(exposure) > cap:
            self._cam.set_controls(self._shutter_controls(cap))
            self.exposure_pinned = True
            log.info("camera: AE wanted %d µs, shutter pinned at %d µs (gain stays auto)", int(exposure), cap)
        elif self.exposure_pinned and gain is not None and float(gain) <= RELEASE_GAIN:
            self._cam.set_controls(self._shutter_controls(None))
            self.exposure_pinned = False
            log.info("camera: bright enough, shutter back to AE (cap %d µs)", cap)

    def _shutter_controls(self, exposure_us: int | None) -> dict[str, Any]:
        if "ExposureTimeMode" in self._controls:  # libcamera >= 0.5
            if exposure_us is None:
                return {"ExposureTimeMode": EXPOSURE_TIME_MODE_AUTO}
            return {"ExposureTimeMode": EXPOSURE_TIME_MODE_MANUAL, "ExposureTime": exposure_us}
        # older libcamera (Raspberry Pi IPA): ExposureTime 0 hands the shutter back to AE
        return {"ExposureTime": 0 if exposure_us is None else exposure_us}
