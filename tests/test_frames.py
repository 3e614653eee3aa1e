"""Frame sources: a generated video (CFR and VFR), damaged files, image folders, the synthetic source."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import itertools
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from firmware.frames import Frame, FrameSource, FrameSourceError, ImageFolderSource, SyntheticSource, VideoSource

HAVE_AV = importlib.util.find_spec("av") is not None
needs_av = pytest.mark.skipif(not HAVE_AV, reason="PyAV not installed (pip install av): video tests need it")

START = datetime(2026, 11, 26, 10, 15, 0, tzinfo=UTC)
RIDES = SHARED / "data" / "rides" / "videos"
# variable frame rate: gaps of 100, 50, 250, 10, ... ms; index/fps would be wrong here
VFR_PTS_MS = [0, 100, 150, 400, 410, 500, 900, 1000, 1033, 1100]


def _mark(index: int, w: int = 160, h: int = 120) -> np.ndarray:
    """A frame whose brightness encodes its number (survives lossy coding)."""
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[:, :, :] = (index * 8) % 256
    return pixels


def _write_video(
    path: Path, pts_ms: list[int], *, w: int = 160, h: int = 120, fps: int = 10, faststart: bool = False
) -> None:
    import av

    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for i, pts in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(_mark(i, w, h), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _in_time(fn: Callable[[], Any], seconds: float = 20.0) -> Any:
    """Run ``fn`` and fail (not hang) if it takes longer than ``seconds``."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=seconds)


@pytest.fixture
def cfr_video(tmp_path: Path) -> Path:
    path = tmp_path / "cfr.mp4"
    _write_video(path, [i * 100 for i in range(30)])
    return path


@needs_av
def test_video_cfr_count_size_and_times(cfr_video: Path) -> None:
    with VideoSource(cfr_video, START, mono_offset_ns=5_000) as src:
        assert isinstance(src, FrameSource)
        assert src.size == (160, 120)
        assert src.fps == pytest.approx(10.0)
        frames = list(src)
    assert len(frames) == 30
    assert [f.index for f in frames] == list(range(30))
    for i, f in enumerate(frames):
        assert f.pixels.shape == (120, 160, 3) and f.pixels.dtype == np.uint8 and not f.bgr
        assert f.t_mono_ns == 5_000 + i * 100_000_000
        assert f.t_utc == START + timedelta(milliseconds=100 * i)
        assert f.source == "cfr.mp4"
    means = [float(f.pixels.mean()) for f in frames]  # each frame 8 levels brighter than the last
    assert all(b > a for a, b in itertools.pairwise(means))


@needs_av
def test_video_vfr_times_follow_pts_not_index(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mkv"
    _write_video(path, VFR_PTS_MS)
    with VideoSource(path, START) as src:
        frames = list(src)
    assert [f.t_mono_ns // 1_000_000 for f in frames] == VFR_PTS_MS
    assert [f.t_utc for f in frames] == [START + timedelta(milliseconds=ms) for ms in VFR_PTS_MS]
    index_times = [i * 100 for i in range(len(VFR_PTS_MS))]
    assert index_times != VFR_PTS_MS  # the clip really is variable-rate: index / fps would be wrong


@needs_av
def test_video_every_n(cfr_video: Path) -> None:
    with VideoSource(cfr_video, START, every_n=3) as src:
        assert src.fps == pytest.approx(10 / 3)
        frames = list(src)
    assert [f.index for f in frames] == list(range(0, 30, 3))
    assert frames[1].t_mono_ns == 300_000_000
    assert src.frames_decoded == 30 and src.frames_yielded == 10


@needs_av
def test_video_target_fps(cfr_video: Path) -> None:
    with VideoSource(cfr_video, START, target_fps=4.0) as src:
        assert src.fps == pytest.approx(4.0)
        frames = list(src)
    # ticks every 250 ms: the first frame at or after each tick
    assert [f.t_mono_ns // 1_000_000 for f in frames] == [
        0,
        300,
        500,
        800,
        1000,
        1300,
        1500,
        1800,
        2000,
        2300,
        2500,
        2800,
    ]


@needs_av
def test_video_target_fps_on_vfr_skips_ticks_over_gaps(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mkv"
    _write_video(path, VFR_PTS_MS)
    with VideoSource(path, START, target_fps=5.0) as src:  # ticks on a 200 ms grid from the first frame
        times = [f.t_mono_ns // 1_000_000 for f in src]
    # 100 and 150 fall before tick 200; 400 takes tick 400; 900 takes 800 (600 had no frame); 1000 takes 1000
    assert times == [0, 400, 900, 1000]


def test_decimation_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FrameSourceError, match="every_n"):
        VideoSource(tmp_path / "x.mp4", START, every_n=0)
    with pytest.raises(FrameSourceError, match="not both"):
        VideoSource(tmp_path / "x.mp4", START, every_n=2, target_fps=5)
    with pytest.raises(FrameSourceError, match="timezone-aware"):
        VideoSource(tmp_path / "x.mp4", datetime(2026, 1, 1))


def test_video_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FrameSourceError, match="video file not found"):
        VideoSource(tmp_path / "nope.mp4", START)


@needs_av
def test_video_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(FrameSourceError, match="not a readable video file"):
        VideoSource(path, START)


@needs_av
def test_video_without_video_stream(tmp_path: Path) -> None:
    import av

    path = tmp_path / "audio.wav"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with pytest.raises(FrameSourceError, match="no video stream"):
        VideoSource(path, START)


@needs_av
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_truncated_gives_frames_up_to_damage(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    whole = tmp_path / f"whole{suffix}"
    _write_video(whole, [i * 100 for i in range(60)], faststart=True)
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    caplog.set_level(logging.WARNING, logger="firmware.frames")

    def read() -> list[Frame]:
        with VideoSource(cut, START) as src:
            return list(src)

    frames = _in_time(read)
    assert 0 < len(frames) < 60
    assert [f.index for f in frames] == list(range(len(frames)))
    # mp4: its index says how many frames there should be; mkv: its header gives the duration
    assert any("ended early" in r.getMessage() or "damaged" in r.getMessage() for r in caplog.records)
    assert f"read {len(frames)} " in caplog.text


@needs_av
def test_video_read_once(cfr_video: Path) -> None:
    with VideoSource(cfr_video, START) as src:
        list(src)
        with pytest.raises(FrameSourceError, match="read once"):
            iter(src)


def test_video_without_pyav_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    path = tmp_path / "ride.mp4"
    path.write_bytes(b"\0" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(FrameSourceError, match="pip install av"):
        VideoSource(path, START)


@needs_av
@pytest.mark.parametrize("name", sorted(p.name for p in RIDES.glob("*.mp4")) or ["<no clips>"])
def test_shared_ride_clips(name: str) -> None:
    path = RIDES / name
    if not path.is_file():
        pytest.skip(f"shared ride clips not found under {RIDES}")
    with VideoSource(path, START) as src:
        w, h = src.size
        frames = []
        for frame in src:
            frames.append(frame)
            if len(frames) == 10:
                break
    assert len(frames) == 10
    assert all(f.pixels.shape == (h, w, 3) for f in frames)
    times = [f.t_mono_ns for f in frames]
    assert times[0] == 0 and times == sorted(set(times))


# image folders


def _save(path: Path, value: int, size: tuple[int, int] = (64, 48)) -> None:
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_image_folder_with_csv(tmp_path: Path) -> None:
    times = ["2026-11-26T10:15:02.500Z", "2026-11-26T10:15:02.000Z", "2026-11-26T11:15:03.250+01:00"]
    rows = ["file,t_utc"]
    for i, t in enumerate(times):
        _save(tmp_path / f"img{i}.png", 10 * (i + 1))
        rows.append(f"img{i}.png,{t}")
    (tmp_path / "times.csv").write_text("\n".join(rows) + "\n")
    with ImageFolderSource(tmp_path, times_csv=tmp_path / "times.csv", mono_offset_ns=7) as src:
        assert isinstance(src, FrameSource)
        assert src.size == (64, 48) and src.fps is None
        frames = list(src)
    assert [f.source for f in frames] == ["img1.png", "img0.png", "img2.png"]  # sorted by time
    assert [f.t_mono_ns for f in frames] == [7, 7 + 500_000_000, 7 + 1_250_000_000]
    assert frames[2].t_utc == datetime(2026, 11, 26, 10, 15, 3, 250_000, tzinfo=UTC)
    assert [int(f.pixels[0, 0, 0]) for f in frames] == [20, 10, 30]


def test_image_folder_csv_bad_time_names_the_line(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", 1)
    (tmp_path / "t.csv").write_text("file,t_utc\na.png,yesterday\n")
    with pytest.raises(FrameSourceError, match=r"t\.csv:2: t_utc"):
        ImageFolderSource(tmp_path, times_csv=tmp_path / "t.csv")
    (tmp_path / "t.csv").write_text("file,t_utc\na.png,2026-11-26T10:15:02\n")
    with pytest.raises(FrameSourceError, match="timezone-aware"):
        ImageFolderSource(tmp_path, times_csv=tmp_path / "t.csv")


def test_image_folder_name_pattern_and_unreadable_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = ["20261126T101502.300Z.jpg", "20261126T101502.123Z.jpg", "20261126T101503.000Z.jpg"]
    for i, name in enumerate(names):
        _save(tmp_path / name, 50 * (i + 1))
    (tmp_path / "20261126T101502.200Z.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    (tmp_path / "cover.jpg").write_bytes(b"")  # no time in the name
    (tmp_path / "notes.txt").write_text("ignored")
    caplog.set_level(logging.WARNING, logger="firmware.frames")
    with ImageFolderSource(tmp_path) as src:
        frames = list(src)
    assert [f.source for f in frames] == [names[1], names[0], names[2]]
    assert [f.index for f in frames] == [0, 2, 3]  # index 1 (the damaged one) left a gap
    assert [f.t_mono_ns for f in frames] == [0, 177_000_000, 877_000_000]
    assert frames[0].t_utc == datetime(2026, 11, 26, 10, 15, 2, 123_000, tzinfo=UTC)
    assert src.skipped == 1 and src.unnamed == 1
    assert "unreadable image skipped" in caplog.text


def test_image_folder_empty_or_missing(tmp_path: Path) -> None:
    with pytest.raises(FrameSourceError, match="no timed images"):
        ImageFolderSource(tmp_path)
    with pytest.raises(FrameSourceError, match="image folder not found"):
        ImageFolderSource(tmp_path / "nope")


# synthetic


def test_synthetic_times_and_sizes() -> None:
    with SyntheticSource(80, 60, n=4, fps=3.0, start_utc=START, mono_offset_ns=10) as src:
        assert isinstance(src, FrameSource)
        assert src.size == (80, 60) and src.fps == 3.0
        frames = list(src)
    assert [f.t_mono_ns for f in frames] == [10, 10 + 333_333_333, 10 + 666_666_667, 10 + 1_000_000_000]
    assert frames[3].t_utc == START + timedelta(seconds=1)
    assert all(f.pixels.shape == (60, 80, 3) for f in frames)
    assert [int(f.pixels[0, 0, 0]) for f in frames] == [0, 1, 2, 3]


def test_synthetic_draw_and_bgr() -> None:
    def draw(i: int) -> np.ndarray | None:
        return None if i == 0 else np.full((2, 3, 3), i, dtype=np.uint8)

    frames = list(SyntheticSource(3, 2, n=2, fps=10, start_utc=START, draw=draw, bgr=True))
    assert all(f.bgr for f in frames)
    assert int(frames[1].pixels.max()) == 1
    with pytest.raises(FrameSourceError, match=r"draw\(0\)"):
        list(SyntheticSource(4, 4, n=1, fps=10, start_utc=START, draw=lambda i: np.zeros((2, 2, 3), np.uint8)))
