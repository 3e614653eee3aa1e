"""The tracker: many per-frame detections of one physical camera become one track.

Each frame's detections are matched to the open tracks by a predicted box (constant velocity
of the centre and constant rate of growth of the size, in image coordinates; a new track
starts with an outward velocity from the focus of expansion) with IoU, falling back on the
centre distance in units of box size, because the IoU of two 6 px boxes is mostly noise.
Matching is optimal (a small Hungarian solver) over the gated pairs. A track is tentative
until it has ``min_hits`` detections within ``confirm_window`` frames and its detections span
``min_duration_s``; a tentative track that dies is dropped (a one-frame false positive, or one
that flickers for a few frames, never becomes a sighting). A track closes when
it has not been matched for ``max_age_frames`` frames or ``max_age_s`` seconds, or when its
prediction leaves the frame; a confirmed track is returned once, as a ``ClosedTrack``::

    tracker = Tracker(TrackerConfig())
    for t_ns, dets in frames:
        for track in tracker.update(t_ns, dets, 1920, 1080):
            publish(track)
    for track in tracker.flush():  # end of ride
        publish(track)

See docs/tracker.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from detector.detection import Box, Detection

log = logging.getLogger(__name__)

_INF = float("inf")
CloseReason = Literal["lost", "left_view", "flush"]


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    """Tracker settings. Frames are ``update`` calls; seconds come from the frames' ``t_ns``.

    ``iou_min``: a pair overlapping at least this (predicted box vs detection) may match.
    ``max_dist``: or its centres lie within this many box sizes (size = mean side, at least
    ``min_size_px``); a track with one observation has no velocity yet and gets ``new_dist``.
    ``foe_norm``: focus of expansion (normalised x, y) from which a new track is assumed to
    move outward at ``expansion_per_s`` (its offset from the FoE grows by that fraction per second).
    ``alpha``/``beta``: gains of the alpha-beta filter on the box centre (position, velocity);
    ``size_alpha``/``size_beta`` the same on the log of the box size.
    ``min_duration_s``: a track is confirmed only once its detections span at least this long
    (first to last; 0 turns it off): a camera passed is seen for seconds, a false positive on
    some camera-like detail for a few frames.
    ``top_k``: the track's score is the mean of its ``top_k`` best detection scores.
    """

    min_hits: int = 3
    confirm_window: int = 5
    min_duration_s: float = 0.5
    max_age_frames: int = 7
    max_age_s: float = 0.8
    iou_min: float = 0.1
    max_dist: float = 1.5
    new_dist: float = 2.5
    min_size_px: float = 4.0
    foe_norm: tuple[float, float] = (0.5, 0.5)
    expansion_per_s: float = 0.5
    alpha: float = 0.85
    beta: float = 0.5
    size_alpha: float = 0.5
    size_beta: float = 0.1
    top_k: int = 3
    max_observations: int = 256

    def __post_init__(self) -> None:
        ints = {"min_hits": 1, "confirm_window": 1, "max_age_frames": 1, "top_k": 1, "max_observations": 1}
        for name, lo in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if self.confirm_window < self.min_hits:
            raise ValueError(f"confirm_window must be >= min_hits ({self.min_hits}), got {self.confirm_window}")
        for name in ("max_age_s", "max_dist", "new_dist", "min_size_px", "expansion_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.min_duration_s, int | float) and 0.0 <= self.min_duration_s < _INF):
            raise ValueError(f"min_duration_s must be a finite number >= 0, got {self.min_duration_s!r}")
        if not 0.0 < self.iou_min <= 1.0:
            raise ValueError(f"iou_min must be within (0, 1], got {self.iou_min!r}")
        for name in ("alpha", "beta", "size_alpha", "size_beta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
                raise ValueError(f"{name} must be within (0, 1], got {value!r}")
        if len(self.foe_norm) != 2 or not all(0.0 <= v <= 1.0 for v in self.foe_norm):
            raise ValueError(f"foe_norm must be two fractions (x, y) within 0..1, got {self.foe_norm!r}")


@dataclass(frozen=True, slots=True)
class Observation:
    """One detection of a track: frame time, box in pixels and normalised, score and class."""

    t_ns: int
    box_px: Box
    box_norm: Box
    score: float
    label: str
    label_id: int

    @property
    def area_px(self) -> float:
        return max(0.0, self.box_px[2] - self.box_px[0]) * max(0.0, self.box_px[3] - self.box_px[1])


@dataclass(frozen=True, slots=True)
class ClosedTrack:
    """One physical camera passed: its observations, the best one, the voted class and the score.

    ``label`` wins a score-weighted vote over the observations (ties: the best observation's
    label); ``score`` is the mean of the ``top_k`` best scores; ``best`` has the highest score
    (ties: the largest box). ``frame_w``/``frame_h`` are the frame size of the last observation.
    """

    track_id: int
    first_t_ns: int
    last_t_ns: int
    observations: tuple[Observation, ...]
    best: Observation
    label: str
    label_id: int
    score: float
    votes: dict[str, float]
    frame_w: int
    frame_h: int
    reason: CloseReason

    @property
    def frames(self) -> int:
        return len(self.observations)


@dataclass(slots=True)
class TrackerStats:
    """Counters since start: what came in, and what became of it."""

    frames: int = 0
    detections: int = 0
    started: int = 0
    confirmed: int = 0
    emitted: int = 0
    dropped_tentative: int = 0


@dataclass(slots=True)
class _Track:
    track_id: int
    first_frame: int
    first_t_ns: int
    last_frame: int
    last_t_ns: int
    cx: float
    cy: float
    w: float
    h: float
    vx: float  # px/s
    vy: float
    vlog: float  # d ln(size) / dt, 1/s
    frame_w: int
    frame_h: int
    hits_ok: bool = False  # min_hits within confirm_window
    confirmed: bool = False  # and min_duration_s: a track that dies before is dropped
    observations: list[Observation] = field(default_factory=list)

    def predict(self, t_ns: int) -> tuple[float, float, float, float]:
        dt = (t_ns - self.last_t_ns) / 1e9
        k = math.exp(max(-2.0, min(2.0, self.vlog * dt)))
        return self.cx + self.vx * dt, self.cy + self.vy * dt, self.w * k, self.h * k


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0 when either is empty."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def hungarian(cost: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Minimum-cost assignment of rows to columns; ``inf`` marks a forbidden pair (never returned).

    The classic O(n^2 m) shortest-augmenting-path method with potentials; rectangular matrices
    are fine (each row or each column, whichever is fewer, is assigned at most once).
    """
    n = len(cost)
    m = len(cost[0]) if n else 0
    if n == 0 or m == 0:
        return []
    finite = [c for row in cost for c in row if c != _INF]
    if not finite:
        return []
    big = (max(abs(c) for c in finite) + 1.0) * (n + m + 1)  # forbidden pairs cost more than any real assignment
    transpose = n > m
    rows, cols = (m, n) if transpose else (n, m)
    c = [[0.0] * cols for _ in range(rows)]
    for i in range(n):
        for j in range(m):
            cij = cost[i][j] if cost[i][j] != _INF else big
            if transpose:
                c[j][i] = cij
            else:
                c[i][j] = cij
    u = [0.0] * (rows + 1)
    v = [0.0] * (cols + 1)
    p = [0] * (cols + 1)  # p[j]: row (1-based) assigned to column j
    way = [0] * (cols + 1)
    for i in range(1, rows + 1):
        p[0] = i
        j0 = 0
        minv = [_INF] * (cols + 1)
        used = [False] * (cols + 1)
        while True:
            used[j0] = True
            i0 = p[j0]
            delta = _INF
            j1 = 0
            for j in range(1, cols + 1):
                if not used[j]:
                    cur = c[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j] = cur
                        way[j] = j0
                    if minv[j] < delta:
                        delta = minv[j]
                        j1 = j
            for j in range(cols + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    pairs: list[tuple[int, int]] = []
    for j in range(1, cols + 1):
        if p[j] == 0:
            continue
        r, col = p[j] - 1, j - 1
        i, jj = (col, r) if transpose else (r, col)
        if cost[i][jj] != _INF:
            pairs.append((i, jj))
    return sorted(pairs)


class Tracker:
    """Associates detections across frames; returns each confirmed track once, when it closes.

    Not thread-safe: call ``update`` from the one pipeline thread. ``t_ns`` must not go backwards.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.stats = TrackerStats()
        self._tracks: list[_Track] = []
        self._frame = -1
        self._next_id = 1
        self._last_t_ns: int | None = None

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    def update(self, t_ns: int, detections: Sequence[Detection], frame_w: int, frame_h: int) -> list[ClosedTrack]:
        """Take one frame's detections (possibly none); return the confirmed tracks that closed."""
        if self._last_t_ns is not None and t_ns < self._last_t_ns:
            raise ValueError(f"t_ns went backwards: {t_ns} < {self._last_t_ns}")
        if frame_w < 1 or frame_h < 1:
            raise ValueError(f"frame size must be positive, got {frame_w}x{frame_h}")
        self._last_t_ns = t_ns
        self._frame += 1
        self.stats.frames += 1
        self.stats.detections += len(detections)
        cfg = self.config

        cost = [[self._cost(tr, t_ns, d) for d in detections] for tr in self._tracks]
        pairs = hungarian(cost) if self._tracks and detections else []
        matched_dets = {j for _, j in pairs}
        for i, j in pairs:
            self._extend(self._tracks[i], t_ns, detections[j], frame_w, frame_h)
        for j, d in enumerate(detections):
            if j not in matched_dets:
                self._start(t_ns, d, frame_w, frame_h)

        closed: list[ClosedTrack] = []
        keep: list[_Track] = []
        for tr in self._tracks:
            reason: CloseReason | None = None
            missed = self._frame - tr.last_frame
            if missed > cfg.max_age_frames or (t_ns - tr.last_t_ns) / 1e9 > cfg.max_age_s:
                reason = "lost"
            elif missed > 0 and not self._in_view(tr, t_ns, frame_w, frame_h):
                reason = "left_view"
            elif not tr.hits_ok and self._frame - tr.first_frame + 1 >= cfg.confirm_window:
                reason = "lost"  # the window is over without min_hits: never confirmed
            if reason is None:
                keep.append(tr)
            else:
                out = self._close(tr, reason)
                if out is not None:
                    closed.append(out)
        self._tracks = keep
        return closed

    def flush(self) -> list[ClosedTrack]:
        """Close every open track (end of ride, shutdown); return the confirmed ones."""
        closed = [out for tr in self._tracks if (out := self._close(tr, "flush")) is not None]
        self._tracks = []
        return closed

    # ---- internals ----

    def _size(self, w: float, h: float) -> float:
        return max((w + h) / 2.0, self.config.min_size_px)

    def _cost(self, tr: _Track, t_ns: int, d: Detection) -> float:
        """Lower is better; ``inf`` when the pair is outside the gate."""
        cfg = self.config
        pcx, pcy, pw, ph = tr.predict(t_ns)
        pred: Box = (pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2)
        overlap = iou(pred, d.box_px)
        dcx, dcy = d.center_px
        size = max(self._size(pw, ph), self._size(d.width_px, d.height_px))
        dist = math.hypot(dcx - pcx, dcy - pcy) / size
        gate = cfg.new_dist if len(tr.observations) < 2 else cfg.max_dist
        gate *= math.sqrt(max(1, self._frame - tr.last_frame))  # each missed frame widens the gate
        # scale must agree too: a box 3x bigger or smaller is another object
        ratio = self._size(d.width_px, d.height_px) / self._size(pw, ph)
        if ratio > 3.0 or ratio < 1 / 3.0:
            return _INF
        if overlap < cfg.iou_min and dist > gate:
            return _INF
        return dist / gate - overlap

    def _start(self, t_ns: int, d: Detection, frame_w: int, frame_h: int) -> None:
        cfg = self.config
        cx, cy = d.center_px
        # no velocity yet: assume the camera moves outward from the focus of expansion
        fx, fy = cfg.foe_norm[0] * frame_w, cfg.foe_norm[1] * frame_h
        e = cfg.expansion_per_s
        tr = _Track(
            track_id=self._next_id,
            first_frame=self._frame,
            first_t_ns=t_ns,
            last_frame=self._frame,
            last_t_ns=t_ns,
            cx=cx,
            cy=cy,
            w=d.width_px,
            h=d.height_px,
            vx=(cx - fx) * e,
            vy=(cy - fy) * e,
            vlog=e,
            frame_w=frame_w,
            frame_h=frame_h,
        )
        self._next_id += 1
        self.stats.started += 1
        self._append(tr, t_ns, d)
        self._confirm(tr, t_ns)
        self._tracks.append(tr)

    def _extend(self, tr: _Track, t_ns: int, d: Detection, frame_w: int, frame_h: int) -> None:
        cfg = self.config
        dt = (t_ns - tr.last_t_ns) / 1e9
        cx, cy = d.center_px
        lw, lh = math.log(self._size(d.width_px, 0.0) * 2), math.log(self._size(0.0, d.height_px) * 2)
        if dt <= 0:
            tr.cx, tr.cy, tr.w, tr.h = cx, cy, d.width_px, d.height_px
        elif len(tr.observations) == 1:
            # the first measured velocity replaces the prior; the size rate keeps its prior (tiny boxes: noise)
            tr.vx, tr.vy = (cx - tr.cx) / dt, (cy - tr.cy) / dt
            tr.cx, tr.cy = cx, cy
            tr.w, tr.h = math.sqrt(tr.w * d.width_px), math.sqrt(tr.h * d.height_px)
        else:
            # alpha-beta filter: the box jitters by a pixel or two, a large share of a 6 px box
            pcx, pcy, pw, ph = tr.predict(t_ns)
            rx, ry = cx - pcx, cy - pcy
            tr.cx, tr.cy = pcx + cfg.alpha * rx, pcy + cfg.alpha * ry
            tr.vx += cfg.beta * rx / dt
            tr.vy += cfg.beta * ry / dt
            rw = lw - math.log(self._size(pw, 0.0) * 2)
            rh = lh - math.log(self._size(0.0, ph) * 2)
            tr.w = pw * math.exp(cfg.size_alpha * rw)
            tr.h = ph * math.exp(cfg.size_alpha * rh)
            tr.vlog += cfg.size_beta * (rw + rh) / 2 / dt
            tr.vlog = max(-1.0, min(4.0, tr.vlog))  # cameras grow as the bike nears; they never shrink fast
        tr.last_frame = self._frame
        tr.last_t_ns = t_ns
        tr.frame_w, tr.frame_h = frame_w, frame_h
        self._append(tr, t_ns, d)
        self._confirm(tr, t_ns)

    def _confirm(self, tr: _Track, t_ns: int) -> None:
        """Confirm ``tr`` once it has ``min_hits`` (counted within the window) and spans ``min_duration_s``."""
        cfg = self.config
        if tr.confirmed:
            return
        if not tr.hits_ok and len(tr.observations) >= cfg.min_hits:
            tr.hits_ok = True
        if tr.hits_ok and (t_ns - tr.first_t_ns) / 1e9 >= cfg.min_duration_s:
            tr.confirmed = True
            self.stats.confirmed += 1
            log.debug("track %s confirmed after %s frames", tr.track_id, self._frame - tr.first_frame + 1)

    def _append(self, tr: _Track, t_ns: int, d: Detection) -> None:
        obs = Observation(t_ns, d.box_px, d.box_norm, d.score, d.label, d.label_id)
        if len(tr.observations) >= self.config.max_observations:
            # keep the first, drop the weakest of the rest: a parked bike must not grow without bound
            weakest = min(range(1, len(tr.observations)), key=lambda k: tr.observations[k].score)
            del tr.observations[weakest]
        tr.observations.append(obs)

    def _in_view(self, tr: _Track, t_ns: int, frame_w: int, frame_h: int) -> bool:
        cx, cy, _, _ = tr.predict(t_ns)
        return 0.0 <= cx <= frame_w and 0.0 <= cy <= frame_h

    def _close(self, tr: _Track, reason: CloseReason) -> ClosedTrack | None:
        if not tr.confirmed:
            self.stats.dropped_tentative += 1
            span_s = (tr.last_t_ns - tr.first_t_ns) / 1e9
            log.debug(
                "tentative track %s dropped after %s detections in %.2f s", tr.track_id, len(tr.observations), span_s
            )
            return None
        obs = tuple(tr.observations)
        best = max(obs, key=lambda o: (o.score, o.area_px))
        votes: dict[str, float] = {}
        ids: dict[str, int] = {}
        for o in obs:
            votes[o.label] = votes.get(o.label, 0.0) + o.score
            ids[o.label] = o.label_id
        top = max(votes.values())
        label = best.label if votes[best.label] == top else min(k for k, v in votes.items() if v == top)
        scores = sorted((o.score for o in obs), reverse=True)[: self.config.top_k]
        self.stats.emitted += 1
        return ClosedTrack(
            track_id=tr.track_id,
            first_t_ns=obs[0].t_ns,
            last_t_ns=obs[-1].t_ns,
            observations=obs,
            best=best,
            label=label,
            label_id=ids[label],
            score=sum(scores) / len(scores),
            votes=votes,
            frame_w=tr.frame_w,
            frame_h=tr.frame_h,
            reason=reason,
        )
