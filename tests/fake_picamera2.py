"""A test double with picamera2's API shape (only what firmware/camera_pi.py uses).

``import fake_picamera2`` stands for ``import picamera2`` on a Camera Module 3 (imx708, with
autofocus); ``module(af=False)`` gives one whose camera has a fixed-focus lens (imx219,
Camera Module 2). Every instance is kept in ``Picamera2.instances`` so a test can look at the
controls it was sent and the requests it handed out.

Controls: like picamera2, ``set_controls`` (and the configuration's ``controls``) refuse a
control the camera does not advertise in ``camera_controls``. ``module()`` advertises the
libcamera < 0.5 set (``AeEnable``, ``ExposureTime`` 0 = automatic); ``module(libcamera_05=True)``
the libcamera >= 0.5 set, where ``AeEnable`` is gone and ``ExposureTimeMode`` /
``AnalogueGainMode`` (0 = auto, 1 = manual) say whether ``ExposureTime`` / ``AnalogueGain`` apply.

A hung camera: ``hang_after = N`` makes ``captured_request()`` block after N frames (as a
wedged libcamera does) until ``unhang()``.

Frames: ``make_array("main")`` returns (H, W, 3) uint8 in BGR order (as RGB888 is in memory):
blue = frame number % 256, red = 7, so a test can check both the order and the frame.
``SensorTimestamp`` starts at ``time.monotonic_ns()`` when ``start()`` is called and steps by
the frame duration (``FrameDurationLimits``); ``skip`` lists frame numbers the "sensor" drops.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace, TracebackType
from typing import Any, ClassVar, Self

import numpy as np

IMX708_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AeEnable": (False, True, True),
    "AeExposureMode": (0, 3, 0),
    "ExposureTime": (26, 220417486, 20000),
    "AnalogueGain": (1.0, 16.0, 1.0),
    "FrameDurationLimits": (33333, 120000000, 33333),
    "AfMode": (0, 2, 0),
    "LensPosition": (0.0, 15.0, 1.0),
}
IMX219_CONTROLS = {k: v for k, v in IMX708_CONTROLS.items() if k not in ("AfMode", "LensPosition")}
# libcamera >= 0.5 (Raspberry Pi OS since mid-2025): no AeEnable, per-parameter auto/manual modes
IMX708_CONTROLS_05: dict[str, tuple[Any, Any, Any]] = {
    **{k: v for k, v in IMX708_CONTROLS.items() if k != "AeEnable"},
    "ExposureTimeMode": (0, 1, 0),
    "AnalogueGainMode": (0, 1, 0),
}
IMX219_CONTROLS_05 = {k: v for k, v in IMX708_CONTROLS_05.items() if k not in ("AfMode", "LensPosition")}


class FakeRequest:
    """A completed request: one buffer and its metadata; ``release()`` gives the buffer back."""

    def __init__(self, camera: Picamera2, number: int, timestamp_ns: int) -> None:
        self.camera = camera
        self.number = number
        self.released = False
        w, h = camera.main_size
        self._buffer = np.zeros((h, w, 3), dtype=np.uint8)
        self._buffer[..., 0] = number % 256  # B
        self._buffer[..., 2] = 7  # R
        self._metadata = {
            "SensorTimestamp": timestamp_ns,
            "ExposureTime": camera.next_exposure_us(),
            "AnalogueGain": camera.next_gain(),
            "FrameDuration": camera.frame_duration_us(),
        }
        if "LensPosition" in camera.camera_controls:
            self._metadata["LensPosition"] = camera.current_controls.get("LensPosition", 1.0)

    def make_array(self, name: str) -> np.ndarray:
        if self.released:
            raise RuntimeError("make_array on a released request: its buffer belongs to the camera again")
        if name != "main":
            raise KeyError(name)
        return self._buffer.copy()  # as picamera2: make_buffer is np.array(mapped buffer), a copy

    def get_metadata(self) -> dict[str, Any]:
        if self.released:
            raise RuntimeError("get_metadata on a released request")
        return dict(self._metadata)

    def release(self) -> None:
        if self.released:
            raise RuntimeError("request released twice")
        self.released = True
        self._buffer[...] = 0xEE  # the camera writes the next frame into it
        self.camera.outstanding -= 1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Picamera2:
    """Camera Module 3 (imx708): has ``AfMode``."""

    instances: ClassVar[list[Picamera2]] = []
    MODEL = "imx708"
    CONTROLS = IMX708_CONTROLS

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.camera_properties: dict[str, Any] = {"Model": self.MODEL, "PixelArraySize": (4608, 2592)}
        self.camera_controls: dict[str, tuple[Any, Any, Any]] = dict(self.CONTROLS)
        self.config: dict[str, Any] | None = None
        self.main_size: tuple[int, int] = (640, 480)
        self.controls_log: list[dict[str, Any]] = []
        self.current_controls: dict[str, Any] = {}
        self.started = False
        self.stopped = False
        self.closed = False
        self.requests: list[FakeRequest] = []
        self.outstanding = 0
        self.skip: set[int] = set()
        self.picked_size: tuple[int, int] | None = None  # set to make "libcamera" pick another size
        self.exposures_us: list[int] = []  # metadata ExposureTime per frame (then the last one repeats)
        self.gains: list[float] = []
        self.hang_after: int | None = None  # captured_request() blocks once this many frames were handed out
        self.hanging = threading.Event()  # set while a captured_request() call is blocked
        self._unhang = threading.Event()
        self._t0 = 0
        self._frame = 0
        type(self).instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [
            {"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}
        ]

    def create_video_configuration(
        self,
        main: dict[str, Any] | None = None,
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] | None = None,
        transform: Any = None,
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] | None = None,
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] | None = None,
        use_case: str = "video",
    ) -> dict[str, Any]:
        main = dict(main or {})
        main.setdefault("format", "XBGR8888")
        main.setdefault("size", (1280, 720))
        return {
            "use_case": use_case,
            "main": main,
            "lores": lores,
            "raw": raw,
            "buffer_count": buffer_count,
            "queue": queue,
            "controls": dict(controls or {}),
            "sensor": dict(sensor or {}),
        }

    def configure(self, config: dict[str, Any]) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.config = config
        size = tuple(config["main"]["size"])
        self.main_size = self.picked_size or (int(size[0]), int(size[1]))
        self.config["main"] = {**config["main"], "size": self.main_size}
        self.config["sensor"] = {"output_size": (2304, 1296), "bit_depth": 10}
        self._apply(config.get("controls") or {})

    def camera_configuration(self) -> dict[str, Any]:
        if self.config is None:
            raise RuntimeError("not configured")
        return self.config

    def set_controls(self, controls: dict[str, Any]) -> None:
        self.controls_log.append(dict(controls))
        self._apply(controls)

    def _apply(self, controls: dict[str, Any]) -> None:
        for name in controls:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name!r} is not advertised by libcamera")
        self.current_controls.update(controls)

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True
        self._t0 = time.monotonic_ns()

    def stop(self) -> None:
        self.started = False
        self.stopped = True

    def close(self) -> None:
        if self.started:
            self.stop()
        self.closed = True

    def frame_duration_us(self) -> int:
        limits = self.current_controls.get("FrameDurationLimits", (33333, 33333))
        return int(limits[0])

    def next_exposure_us(self) -> int:
        if not self.exposures_us:
            return int(self.current_controls.get("ExposureTime") or 20000)
        return self.exposures_us[min(self._frame, len(self.exposures_us) - 1)]

    def next_gain(self) -> float:
        if not self.gains:
            return 2.0
        return self.gains[min(self._frame, len(self.gains) - 1)]

    def unhang(self) -> None:
        """Let a hung ``captured_request()`` go on (and never hang again)."""
        self.hang_after = None
        self._unhang.set()

    def captured_request(self, wait: float | None = None, flush: Any = None) -> FakeRequest:
        if not self.started:
            raise RuntimeError("Camera is not running")
        if self.hang_after is not None and len(self.requests) >= self.hang_after:
            self.hanging.set()
            self._unhang.wait()
            self.hanging.clear()
        while self._frame in self.skip:
            self._frame += 1
        if self.outstanding >= (self.config or {}).get("buffer_count", 1):
            raise RuntimeError("all buffers held by the application: the camera stalls")
        ts = self._t0 + self._frame * self.frame_duration_us() * 1000
        request = FakeRequest(self, self._frame, ts)
        self._frame += 1
        self.outstanding += 1
        self.requests.append(request)
        return request


class Picamera2NoAf(Picamera2):
    """Camera Module 2 (imx219): a fixed-focus lens, no ``AfMode``."""

    MODEL = "imx219"
    CONTROLS = IMX219_CONTROLS

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return [{"Model": "imx219", "Location": 2, "Rotation": 0, "Id": "/base/soc/i2c0mux/i2c@1/imx219@10", "Num": 0}]


class Picamera2Libcamera05(Picamera2):
    """Camera Module 3 on libcamera >= 0.5: ``ExposureTimeMode``/``AnalogueGainMode``, no ``AeEnable``."""

    CONTROLS = IMX708_CONTROLS_05

    def next_exposure_us(self) -> int:
        if not self.exposures_us and self.current_controls.get("ExposureTimeMode", 0) == 0:
            return 20000  # auto: AE's choice, whatever ExposureTime was set to
        return super().next_exposure_us()


class Picamera2NoAfLibcamera05(Picamera2Libcamera05):
    MODEL = "imx219"
    CONTROLS = IMX219_CONTROLS_05

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return Picamera2NoAf.global_camera_info()


class PicamNoCamera(Picamera2):
    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        return []


def module(af: bool = True, cameras: bool = True, libcamera_05: bool = False) -> SimpleNamespace:
    """A stand-in for the ``picamera2`` module: ``module().Picamera2`` is the class to use."""
    cls: type[Picamera2]
    if libcamera_05:
        cls = Picamera2Libcamera05 if af else Picamera2NoAfLibcamera05
    else:
        cls = Picamera2 if af else Picamera2NoAf
    if not cameras:
        cls = PicamNoCamera
    return SimpleNamespace(Picamera2=cls)
