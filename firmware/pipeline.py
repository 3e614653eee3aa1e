"""The ride pipeline: frames -> detector -> tracker -> geotag -> sighting -> sink.

One thread calls ``process(frame)`` per captured frame and ``finish()`` at the end of the
ride; see docs/pipeline.md::

    pipeline = Pipeline(detector, CameraModel(66.0, 0.0, 1920), track, Tracker(), sink, device_id)
    for frame in source:
        pipeline.process(frame)
    print(pipeline.finish())

Nothing is ever published with an invented position: a track none of whose observations has
a position is counted in ``Summary.no_fix_tracks`` and dropped.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from detector.detection import Detection
from firmware.frames import Frame, Pixels
from firmware.geometry import BearingRay, CameraModel, intersect_rays
from firmware.position import FramePosition, NoFix, PositionTrack
from firmware.privacy import PrivacyFilter
from firmware.sighting import MAX_RAYS, ModelRef, Position, Ray, Sighting, new_id
from firmware.sinks import Sink
from firmware.tracker import ClosedTrack, Observation, Tracker

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_ACC_M = 10.0
"""Accuracy assumed for a position whose source gives none (a GPX point without HDOP)."""

UTC_RETENTION_S = 600.0
"""How long a frame's UTC time is kept for its observations; older ones are derived from the oldest kept."""


class FrameDetector(Protocol):
    """What the pipeline needs of ``detector.Detector``: ``detect`` and the model's spec (name,
    version, sha256 for the sighting's model reference; ``osm_tags(label)`` for its tags)."""

    @property
    def spec(self) -> Any: ...  # detector.model.ModelSpec (name, version, sha256)

    def detect(self, frame: Pixels, *, bgr: bool = False) -> list[Detection]: ...


def model_ref_of(detector: FrameDetector) -> ModelRef:
    """The sighting's model reference from the detector's sidecar: name, version, sha256."""
    spec = detector.spec
    return ModelRef(str(spec.name), str(spec.version), str(spec.sha256))


@dataclass(frozen=True, slots=True)
class Summary:
    """What one ride (or one run of the pipeline) did.

    ``seconds`` is wall-clock processing time and ``fps`` frames per such second;
    ``ride_seconds`` spans the first to the last frame's capture time. ``tracks_confirmed``
    counts confirmed tracks; each became a sighting (``sightings_published``), or had no
    position at all (``no_fix_tracks``), or positions but no heading (``no_heading_tracks``,
    standing still: no bearing can be drawn). Of the sightings built, ``privacy_dropped`` lay
    in a 'drop' privacy zone and were never published; ``privacy_delayed`` lay in a 'delay'
    zone and were held, and ``privacy_held`` of those were still not due when the run ended
    (kept in the privacy hold file for a later run, or lost with an in-memory hold; see
    firmware/privacy.py). ``seconds`` ends before the sink's final flush (waiting for the
    broker's acknowledgements is not processing); ``flush_seconds`` is that wait.
    """

    frames: int
    seconds: float
    ride_seconds: float
    fps: float
    detections: int
    tracks_confirmed: int
    sightings_published: int
    no_fix_tracks: int
    no_heading_tracks: int
    sink: str
    privacy_dropped: int = 0
    privacy_delayed: int = 0
    privacy_held: int = 0
    flush_seconds: float = 0.0

    def __str__(self) -> str:
        line = (
            f"{self.frames} frames ({self.ride_seconds:.1f} s of ride) in {self.seconds:.1f} s ({self.fps:.1f} fps), "
            f"{self.detections} detections, {self.tracks_confirmed} tracks confirmed, "
            f"{self.sightings_published} sightings published, {self.no_fix_tracks} tracks without a position fix, "
            f"{self.no_heading_tracks} without a heading -> {self.sink}"
        )
        if self.privacy_dropped or self.privacy_delayed:
            line += (
                f"\nprivacy zones: {self.privacy_dropped} sightings dropped, {self.privacy_delayed} delayed"
                f" ({self.privacy_held} still held at the end)"
            )
        return line


@dataclass(slots=True)
class _Waiting:
    """A closed track some of whose observations were PENDING (after the newest fix) when it closed."""

    track: ClosedTrack
    deadline_ns: int  # frame time after which PENDING counts as no fix


class Pipeline:
    """Frames in, sightings out. Not thread-safe: one thread calls ``process`` and ``finish``.

    ``camera_model`` is the mounted camera (its width is rescaled to each frame's width);
    ``positions`` is the rider's track, filled up front (replay) or by a reader thread (live).
    A track whose observations come after the newest fix (``NoFixReason.PENDING``) waits
    until the fixes catch up, or ``positions.max_gap_s`` of frame time has passed, then is
    geotagged with what there is.

    ``privacy`` (a PrivacyFilter) sees every sighting before the sink: dropped in a 'drop'
    zone, held in a 'delay' zone (released to the sink once due, checked every frame), times
    coarsened, crops removed. None publishes sightings as built (tests, tools).
    """

    def __init__(
        self,
        detector: FrameDetector,
        camera_model: CameraModel,
        positions: PositionTrack,
        tracker: Tracker,
        sink: Sink,
        device_id: str,
        privacy: PrivacyFilter | None = None,
    ) -> None:
        self.detector = detector
        self.camera_model = camera_model
        self.positions = positions
        self.tracker = tracker
        self.sink = sink
        self.device_id = device_id
        self.model_ref = model_ref_of(detector)
        self.privacy = privacy
        self.frames = 0
        self.detections = 0
        self.published = 0
        self.no_fix_tracks = 0
        self.no_heading_tracks = 0
        self._utc: OrderedDict[int, datetime] = OrderedDict()  # frame t_mono_ns -> t_utc
        self._waiting: list[_Waiting] = []
        self._started: float | None = None
        self._first_t_ns: int | None = None
        self._last_t_ns: int | None = None
        self._finished: Summary | None = None

    # ---- the flow ----

    def process(self, frame: Frame) -> None:
        """Detect, track, and geotag and publish every track that closed with this frame."""
        if self._finished is not None:
            raise RuntimeError("the pipeline has finished; start a new one")
        if self._started is None:
            self._started = time.monotonic()
            self._first_t_ns = frame.t_mono_ns
        self._last_t_ns = frame.t_mono_ns
        self.frames += 1
        self._remember_utc(frame.t_mono_ns, frame.t_utc)
        dets = self.detector.detect(frame.pixels, bgr=frame.bgr)
        self.detections += len(dets)
        w, h = frame.size
        closed = self.tracker.update(frame.t_mono_ns, dets, w, h)
        self._retry_waiting(frame.t_mono_ns, final=False)
        for track in closed:
            self._handle(track, frame.t_mono_ns)
        self._release_due()

    def finish(self, flush_timeout_s: float = 5.0) -> Summary:
        """Close the open tracks, publish them (and the delayed sightings now due), flush the
        sink for up to ``flush_timeout_s`` (it stays open) and sum up."""
        if self._finished is not None:
            return self._finished
        for track in self.tracker.flush():
            self._waiting.append(_Waiting(track, 0))
        self._retry_waiting(None, final=True)
        self._release_due()
        seconds = 0.0 if self._started is None else max(0.0, time.monotonic() - self._started)
        flush_started = time.monotonic()
        if not self.sink.flush(flush_timeout_s):
            log.warning("not every sighting was delivered yet; they stay queued in %s", self.sink.describe())
        flush_seconds = max(0.0, time.monotonic() - flush_started)
        ride = (
            0.0 if self._first_t_ns is None or self._last_t_ns is None else (self._last_t_ns - self._first_t_ns) / 1e9
        )
        self._finished = Summary(
            frames=self.frames,
            seconds=seconds,
            ride_seconds=ride,
            fps=self.frames / seconds if seconds > 0 else 0.0,
            detections=self.detections,
            tracks_confirmed=self.tracker.stats.confirmed,
            sightings_published=self.published,
            no_fix_tracks=self.no_fix_tracks,
            no_heading_tracks=self.no_heading_tracks,
            sink=self.sink.describe(),
            privacy_dropped=0 if self.privacy is None else self.privacy.dropped,
            privacy_delayed=0 if self.privacy is None else self.privacy.delayed,
            privacy_held=0 if self.privacy is None else self.privacy.held,
            flush_seconds=flush_seconds,
        )
        return self._finished

    # ---- internals ----

    def _remember_utc(self, t_ns: int, t_utc: datetime) -> None:
        self._utc[t_ns] = t_utc
        horizon = t_ns - int(UTC_RETENTION_S * 1e9)
        while len(self._utc) > 2:
            oldest = next(iter(self._utc))
            if oldest >= horizon:
                break
            del self._utc[oldest]

    def _utc_of(self, t_ns: int) -> datetime:
        t = self._utc.get(t_ns)
        if t is not None:
            return t
        # pruned (a very long track): the same offset as the oldest frame still known
        ref_ns, ref_utc = next(iter(self._utc.items()))
        return ref_utc + timedelta(microseconds=round((t_ns - ref_ns) / 1000))

    def _handle(self, track: ClosedTrack, now_ns: int) -> None:
        if self._pending(track):
            self._waiting.append(_Waiting(track, now_ns + int(self.positions.max_gap_s * 1e9)))
            return
        self._publish(track, self._lookup(track))

    def _retry_waiting(self, now_ns: int | None, *, final: bool) -> None:
        still: list[_Waiting] = []
        for item in self._waiting:
            if not final and now_ns is not None and now_ns <= item.deadline_ns and self._pending(item.track):
                still.append(item)
            else:
                self._publish(item.track, self._lookup(item.track))
        self._waiting = still

    def _pending(self, track: ClosedTrack) -> bool:
        """True while the track's newest observation is after the newest fix (PENDING: the
        fixes may yet catch up). Observations are in time order, so no earlier one can be."""
        p = self.positions.at(self._utc_of(track.observations[-1].t_ns))
        return isinstance(p, NoFix) and p.retry

    def _lookup(self, track: ClosedTrack) -> list[FramePosition | NoFix]:
        return [self.positions.at(self._utc_of(o.t_ns)) for o in track.observations]

    def _publish(self, track: ClosedTrack, looked: Sequence[FramePosition | NoFix]) -> None:
        built = self.build_sighting(track, looked)
        if built is None:
            return
        sighting = built if self.privacy is None else self.privacy.submit(built)
        if sighting is None:
            log.info("sighting %s: in a privacy zone, dropped or held", built.id)
            return
        self._submit(sighting)

    def _release_due(self) -> None:
        if self.privacy is not None and self.privacy.held:
            for sighting in self.privacy.due():
                self._submit(sighting)
                self.privacy.delivered(sighting)

    def _submit(self, sighting: Sighting) -> None:
        self.sink.submit(sighting)
        self.published += 1
        log.info(
            "sighting %s: %s %.2f, %d frames, %d rays, estimate %s",
            sighting.id,
            sighting.label,
            sighting.score,
            sighting.frames,
            len(sighting.rays),
            "yes" if sighting.estimate is not None else "no",
        )

    def build_sighting(self, track: ClosedTrack, looked: Sequence[FramePosition | NoFix]) -> Sighting | None:
        """The sighting of ``track`` given each observation's position, or None (counted) when it has none."""
        obs = track.observations
        positioned = [(o, p) for o, p in zip(obs, looked, strict=True) if isinstance(p, FramePosition)]
        if not positioned:
            self.no_fix_tracks += 1
            log.info("track %d: no position fix for any of its %d frames, not published", track.track_id, len(obs))
            return None
        camera = self.camera_model
        if track.frame_w != camera.width_px:
            camera = camera.for_width(track.frame_w)
        rays: list[tuple[Observation, BearingRay]] = []
        for o, p in positioned:
            if p.heading_deg is None:
                continue
            b = camera.bearing_of(o.box_px, p.heading_deg)
            rays.append((o, BearingRay(o.t_ns, p.lat_deg, p.lon_deg, _acc(p), b.bearing_deg, b.sigma_deg)))
        if not rays:
            self.no_heading_tracks += 1
            log.info("track %d: positions but no heading (standing still?), not published", track.track_id)
            return None
        fix = intersect_rays([r for _, r in rays])
        observer = _observer(track.best, positioned)
        kept = _subsample(rays, MAX_RAYS)
        sighting_rays: list[Ray] = [r.to_sighting_ray(self._utc_of(o.t_ns)) for o, r in kept]
        return Sighting(
            id=new_id(),
            device=self.device_id,
            first_seen_utc=self._utc_of(obs[0].t_ns),
            last_seen_utc=self._utc_of(obs[-1].t_ns),
            label=track.label,
            score=min(1.0, max(0.0, track.score)),
            frames=len(obs),
            observer=Position(observer.lat_deg, observer.lon_deg, _acc(observer)),
            rays=tuple(sighting_rays),
            estimate=None if fix is None else fix.to_estimate(),
            tags=self.detector.spec.osm_tags(track.label),  # the model's sidecar: the tags each label implies
            model=self.model_ref,
        )


def _acc(p: FramePosition) -> float:
    return DEFAULT_ACC_M if p.acc_m is None else p.acc_m


def _observer(best: Observation, positioned: Sequence[tuple[Observation, FramePosition]]) -> FramePosition:
    """The position at the best observation, else at the positioned observation nearest to it in time."""
    return min(positioned, key=lambda op: abs(op[0].t_ns - best.t_ns))[1]


def _subsample(items: Sequence[_T], cap: int) -> list[_T]:
    """At most ``cap`` items, evenly spread, first and last kept."""
    n = len(items)
    if n <= cap:
        return list(items)
    if cap == 1:
        return [items[0]]
    return [items[round(i * (n - 1) / (cap - 1))] for i in range(cap)]
