"""Frame sources for the ride pipeline: a video file, a folder of timed images, a synthetic source.

See docs/frames.md. Every source is a context manager and an iterator of ``Frame``; each frame
carries its pixels, a monotonic capture time (``t_mono_ns``) and its UTC time (``t_utc``). The
picamera2 adapter (firmware/camera_pi.py) implements the same ``FrameSource`` protocol.

PyAV (``av``) is imported only inside ``VideoSource``; PIL only inside ``ImageFolderSource``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
DEFAULT_NAME_PATTERN = "%Y%m%dT%H%M%S.%fZ"

Pixels = npt.NDArray[np.uint8]


class FrameSourceError(Exception):
    """A frame source cannot start: missing file, not a video, no video stream, bad times."""


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``pixels`` is (H, W, 3) uint8, RGB unless ``bgr`` (picamera2's RGB888 is BGR in memory);
    pass ``bgr=frame.bgr`` to the detector. ``t_mono_ns`` is the capture time in the
    ``time.monotonic_ns()`` clock (for a recording: the first frame's time plus an offset);
    ``t_utc`` is the aware UTC capture time. ``index`` counts the source's frames from 0,
    including ones skipped by decimation or damage, so gaps show. ``source`` names the source.
    """

    pixels: Pixels
    bgr: bool
    t_mono_ns: int
    t_utc: datetime
    index: int
    source: str

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@runtime_checkable
class FrameSource(Protocol):
    """What the pipeline reads frames from (a recording, a test source, the Pi camera)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every frame, known before the first frame."""
        ...

    @property
    def fps(self) -> float | None:
        """Nominal frames per second after decimation, or None when unknown (image folders)."""
        ...

    def __iter__(self) -> Iterator[Frame]: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def close(self) -> None: ...


def _require_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise FrameSourceError(f"{name}: must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def ns_to_timedelta(ns: int) -> timedelta:
    """``ns`` nanoseconds as a timedelta, rounded to the µs (datetime's resolution; ``t_mono_ns``
    keeps the full nanoseconds)."""
    return timedelta(microseconds=round(ns / 1000))


class _Decimator:
    """Keeps every n-th frame, or the frames whose time crosses the next tick of a target rate."""

    def __init__(self, every_n: int, target_fps: float | None) -> None:
        if every_n < 1:
            raise FrameSourceError(f"every_n: must be >= 1, got {every_n}")
        if target_fps is not None:
            if not target_fps > 0:
                raise FrameSourceError(f"target_fps: must be > 0, got {target_fps}")
            if every_n != 1:
                raise FrameSourceError("give every_n or target_fps, not both")
        self.every_n = every_n
        self.period_ns = None if target_fps is None else Fraction(NS_PER_S) / Fraction(target_fps)
        self._next_tick: Fraction | None = None

    def keep(self, index: int, t_rel_ns: int) -> bool:
        if self.period_ns is None:
            return index % self.every_n == 0
        if self._next_tick is None:
            self._next_tick = Fraction(t_rel_ns)
        if t_rel_ns < self._next_tick:
            return False
        # the first tick after this frame; a long gap skips ticks instead of bunching frames
        ticks = (t_rel_ns - self._next_tick) // self.period_ns + 1
        self._next_tick += ticks * self.period_ns
        return True


class _SourceBase:
    """Context-manager plumbing shared by the sources."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        pass


class VideoSource(_SourceBase):
    """Frames of a video file, timed by the container's presentation timestamps (pts).

    The first decoded frame is at ``start_utc`` and ``mono_offset_ns``; every later frame is at
    ``(pts - first_pts) * time_base`` after it, so variable frame rates stay right. Keep every
    ``every_n``-th frame, or thin to ``target_fps``. A damaged file ends the ride early with a
    warning and the count of frames read (``frames_decoded``, ``damaged``).

    >>> with VideoSource("ride.mp4", datetime(2026, 11, 26, 10, tzinfo=UTC), target_fps=5) as src:  # doctest: +SKIP
    ...     for frame in src:
    ...         detector.detect(frame.pixels, bgr=frame.bgr)
    """

    def __init__(
        self,
        path: str | Path,
        start_utc: datetime,
        *,
        every_n: int = 1,
        target_fps: float | None = None,
        mono_offset_ns: int = 0,
    ) -> None:
        self.path = Path(path)
        self.start_utc = _require_utc(start_utc, "start_utc")
        self.mono_offset_ns = mono_offset_ns
        self._decimator = _Decimator(every_n, target_fps)
        self._target_fps = target_fps
        self.frames_decoded = 0
        self.frames_yielded = 0
        self.damaged = False
        self._started = False
        if not self.path.is_file():
            raise FrameSourceError(f"video file not found: {self.path}")
        try:
            import av  # type: ignore[import-not-found, unused-ignore]  # optional: absent on most machines
        except ImportError as exc:
            raise FrameSourceError(
                "reading video files needs PyAV: pip install av (wheels for cp311/cp313 aarch64 and x86_64)"
            ) from exc
        self._av: Any = av
        try:
            self._container = av.open(str(self.path), mode="r")
        except av.error.FFmpegError as exc:
            raise FrameSourceError(f"not a readable video file: {self.path} ({exc})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise FrameSourceError(f"no video stream in {self.path}")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        self._size = (int(ctx.width), int(ctx.height))
        if self._size[0] <= 0 or self._size[1] <= 0:
            self._container.close()
            raise FrameSourceError(f"video stream in {self.path} has no frame size")
        rate = self._stream.average_rate or self._stream.guessed_rate
        self._native_fps = float(rate) if rate else None
        self.expected_frames = int(self._stream.frames or 0)  # 0: the container does not say
        # Matroska and others give no frame count, only a duration (container: in µs)
        duration = self._container.duration
        self.expected_duration_ns = 0 if duration is None else int(duration) * 1000

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float | None:
        if self._target_fps is not None:
            return self._target_fps if self._native_fps is None else min(self._target_fps, self._native_fps)
        if self._native_fps is None:
            return None
        return self._native_fps / self._decimator.every_n

    @property
    def native_fps(self) -> float | None:
        """The container's average frame rate, before decimation."""
        return self._native_fps

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise FrameSourceError(f"{self.path.name}: a VideoSource can be read once; open a new one")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        av = self._av
        time_base = self._stream.time_base
        first_pts: int | None = None
        last_rel_ns = -1
        decoded = self._container.decode(self._stream)
        while True:
            try:
                vf = next(decoded)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                self.damaged = True
                log.warning(
                    "%s: video damaged after %d frames, stopping (%s)", self.path.name, self.frames_decoded, exc
                )
                break
            index = self.frames_decoded
            self.frames_decoded += 1
            pts = vf.pts
            if pts is None or time_base is None:
                log.warning("%s: frame %d has no timestamp, skipped", self.path.name, index)
                continue
            if first_pts is None:
                first_pts = pts
            rel_ns = round(Fraction(pts - first_pts) * Fraction(time_base) * NS_PER_S)
            if rel_ns <= last_rel_ns:
                log.warning("%s: frame %d is not after the previous frame in time, skipped", self.path.name, index)
                continue
            last_rel_ns = rel_ns
            if not self._decimator.keep(index, rel_ns):
                continue
            pixels = np.asarray(vf.to_ndarray(format="rgb24"), dtype=np.uint8)
            self.frames_yielded += 1
            yield Frame(
                pixels=pixels,
                bgr=False,
                t_mono_ns=self.mono_offset_ns + rel_ns,
                t_utc=self.start_utc + ns_to_timedelta(rel_ns),
                index=index,
                source=self.path.name,
            )
        if self.damaged:
            return
        if self.expected_frames and self.frames_decoded < self.expected_frames:
            self.damaged = True
            log.warning(
                "%s: video ended early: read %d of %d frames (truncated?)",
                self.path.name,
                self.frames_decoded,
                self.expected_frames,
            )
        elif not self.expected_frames and self.expected_duration_ns and self._native_fps:
            # the last frame starts one frame period before the end; allow two more for rounding
            slack_ns = 3 * NS_PER_S / self._native_fps
            if last_rel_ns + slack_ns < self.expected_duration_ns:
                self.damaged = True
                log.warning(
                    "%s: video ended early: read %d frames, %.2f s of %.2f s (truncated?)",
                    self.path.name,
                    self.frames_decoded,
                    last_rel_ns / NS_PER_S,
                    self.expected_duration_ns / NS_PER_S,
                )


@dataclass(frozen=True)
class _TimedImage:
    path: Path
    t_utc: datetime


class ImageFolderSource(_SourceBase):
    """Images in a folder, in time order, timed by a CSV (``file,t_utc``) or by their file names.

    ``times_csv`` has a header ``file,t_utc``; files are relative to ``folder``; times are
    ISO-8601 with an offset (``2026-11-26T10:15:02.123Z``). Without it each image's stem is
    parsed with ``pattern`` (a ``strptime`` format, UTC; default ``20261126T101502.123Z``).
    Monotonic times count from the first image plus ``mono_offset_ns``. An unreadable image,
    or one of another size than the first, is skipped with a warning and counted in
    ``skipped``; names that do not match the pattern are counted in ``unnamed``.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        times_csv: str | Path | None = None,
        pattern: str = DEFAULT_NAME_PATTERN,
        mono_offset_ns: int = 0,
    ) -> None:
        self.folder = Path(folder)
        self.mono_offset_ns = mono_offset_ns
        self.skipped = 0
        self.unnamed = 0
        if not self.folder.is_dir():
            raise FrameSourceError(f"image folder not found: {self.folder}")
        items = self._from_csv(Path(times_csv)) if times_csv is not None else self._from_names(pattern)
        if not items:
            raise FrameSourceError(f"no timed images in {self.folder}")
        self._items = sorted(items, key=lambda item: item.t_utc)  # stable: ties keep listing order
        self._size = self._first_size()

    def _from_csv(self, csv_path: Path) -> list[_TimedImage]:
        if not csv_path.is_file():
            raise FrameSourceError(f"times CSV not found: {csv_path}")
        items: list[_TimedImage] = []
        with csv_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"file", "t_utc"} <= set(reader.fieldnames):
                raise FrameSourceError(f"{csv_path}: needs a header with columns file,t_utc")
            for row in reader:
                line = reader.line_num
                try:
                    t = datetime.fromisoformat(row["t_utc"].strip())
                except (ValueError, AttributeError) as exc:
                    raise FrameSourceError(f"{csv_path}:{line}: t_utc: not an ISO-8601 time: {row['t_utc']!r}") from exc
                items.append(_TimedImage(self.folder / row["file"].strip(), _require_utc(t, f"{csv_path}:{line}")))
        return items

    def _from_names(self, pattern: str) -> list[_TimedImage]:
        items: list[_TimedImage] = []
        for path in sorted(self.folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue
            try:
                t = datetime.strptime(path.stem, pattern)
            except ValueError:
                self.unnamed += 1
                log.warning("%s: name does not match %r, skipped", path.name, pattern)
                continue
            items.append(_TimedImage(path, t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)))
        return items

    def _first_size(self) -> tuple[int, int]:
        from PIL import Image

        for item in self._items:
            try:
                with Image.open(item.path) as img:
                    return int(img.size[0]), int(img.size[1])
            except (OSError, ValueError):
                continue
        raise FrameSourceError(f"no readable image in {self.folder}")

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float | None:
        return None

    def __iter__(self) -> Iterator[Frame]:
        from PIL import Image

        t0 = self._items[0].t_utc
        for index, item in enumerate(self._items):
            try:
                with Image.open(item.path) as img:
                    pixels: Pixels = np.asarray(img.convert("RGB"), dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as exc:
                # PIL raises OSError for missing/truncated/unknown files, SyntaxError for some bad headers
                self.skipped += 1
                log.warning("%s: unreadable image skipped (%s)", item.path.name, exc)
                continue
            if (pixels.shape[1], pixels.shape[0]) != self._size:
                self.skipped += 1
                log.warning("%s: size %dx%d, not %dx%d, skipped", item.path.name, *pixels.shape[1::-1], *self._size)
                continue
            delta = item.t_utc - t0
            rel_ns = (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000
            yield Frame(pixels, False, self.mono_offset_ns + rel_ns, item.t_utc, index, item.path.name)


def _default_draw(width: int, height: int) -> Callable[[int], Pixels]:
    def draw(index: int) -> Pixels:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[..., 0] = index % 256  # the frame number, readable back from any pixel
        pixels[..., 1] = (index // 256) % 256
        return pixels

    return draw


class SyntheticSource(_SourceBase):
    """``n`` frames of ``w`` x ``h`` at exactly ``fps``: the test source.

    ``draw(index)`` returns the pixels of frame ``index`` ((h, w, 3) uint8) or None for the
    default (red channel = index % 256). Frame ``i`` is at ``mono_offset_ns + i / fps`` and
    ``start_utc + i / fps``.

    >>> src = SyntheticSource(64, 48, n=3, fps=10.0, start_utc=datetime(2026, 1, 1, tzinfo=UTC))
    >>> [f.t_mono_ns for f in src]
    [0, 100000000, 200000000]
    """

    def __init__(
        self,
        w: int,
        h: int,
        n: int,
        fps: float,
        start_utc: datetime,
        draw: Callable[[int], Pixels | None] | None = None,
        *,
        bgr: bool = False,
        mono_offset_ns: int = 0,
        name: str = "synthetic",
    ) -> None:
        if w <= 0 or h <= 0:
            raise FrameSourceError(f"size: must be positive, got {w}x{h}")
        if n < 0:
            raise FrameSourceError(f"n: must be >= 0, got {n}")
        if not fps > 0:
            raise FrameSourceError(f"fps: must be > 0, got {fps}")
        self._size = (w, h)
        self.n = n
        self._fps = fps
        self.start_utc = _require_utc(start_utc, "start_utc")
        self._draw = draw
        self._default = _default_draw(w, h)
        self.bgr = bgr
        self.mono_offset_ns = mono_offset_ns
        self.name = name

    @property
    def size(self) -> tuple[int, int]:
        return self._size

    @property
    def fps(self) -> float | None:
        return self._fps

    def __iter__(self) -> Iterator[Frame]:
        period = Fraction(NS_PER_S) / Fraction(self._fps)
        w, h = self._size
        for index in range(self.n):
            pixels = self._draw(index) if self._draw is not None else None
            if pixels is None:
                pixels = self._default(index)
            if pixels.shape != (h, w, 3) or pixels.dtype != np.uint8:
                raise FrameSourceError(
                    f"draw({index}): expected ({h}, {w}, 3) uint8, got {pixels.shape} {pixels.dtype}"
                )
            rel_ns = round(index * period)
            yield Frame(
                pixels,
                self.bgr,
                self.mono_offset_ns + rel_ns,
                self.start_utc + ns_to_timedelta(rel_ns),
                index,
                self.name,
            )
