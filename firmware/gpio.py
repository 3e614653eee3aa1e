"""The rider's interface on the road: a status LED, an optional buzzer and one button.

gpiozero is imported lazily inside this module only, so the rest of ``firmware`` imports on
any machine. Every device takes a ``pin_factory``; tests pass gpiozero's own ``MockFactory``.

Times are in seconds, pins are BCM numbers. Example (runs anywhere with gpiozero)::

    from gpiozero.pins.mock import MockFactory
    panel = Panel(GpioSettings(), on_shutdown=lambda: None, pin_factory=MockFactory())
    panel.set_state(LedState.RUNNING)
    panel.sighting()  # one short beep, one short dark flash of the LED
    panel.close()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[], None]


@dataclass(frozen=True)
class GpioSettings:
    """BCM pin numbers and timings. ``buzzer_pin=None`` means no buzzer is fitted.

    ``debounce_s``: the button's contacts bounce for a few ms on press and release; gpiozero's
    ``bounce_time`` (on the Pi's lgpio backend: an edge is reported only once the level has been
    stable this long) turns each press into one edge. 0 turns debouncing off.
    """

    led_pin: int = 17
    buzzer_pin: int | None = 27
    button_pin: int = 22
    long_press_s: float = 3.0
    beep_s: float = 0.08
    debounce_s: float = 0.05

    def __post_init__(self) -> None:
        pins = [self.led_pin, self.button_pin] + ([] if self.buzzer_pin is None else [self.buzzer_pin])
        if len(set(pins)) != len(pins):
            raise ValueError(f"gpio pins must differ, got {pins}")
        if self.long_press_s <= 0 or self.beep_s <= 0:
            raise ValueError("gpio long_press_s and beep_s must be > 0")
        if not 0 <= self.debounce_s < self.long_press_s:
            raise ValueError("gpio debounce_s must be >= 0 and shorter than long_press_s")


class LedState(StrEnum):
    STARTING = "starting"
    WAITING_FOR_FIX = "waiting_for_fix"
    RUNNING = "running"
    PAUSED = "paused"
    ERROR = "error"


@dataclass(frozen=True)
class Pattern:
    """``n`` blinks of ``on_s``/``off_s``, then ``gap_s`` dark, repeated.

    ``n=None`` blinks forever without a gap; ``on_s`` with ``off_s == 0`` is steady on.
    """

    on_s: float
    off_s: float
    n: int | None = None
    gap_s: float = 0.0


DEFAULT_PATTERNS: Mapping[LedState, Pattern] = {
    LedState.STARTING: Pattern(0.1, 0.1),  # fast blink
    LedState.WAITING_FOR_FIX: Pattern(0.5, 1.0),  # slow blink
    LedState.RUNNING: Pattern(1.0, 0.0),  # steady on, dark flash per sighting
    LedState.PAUSED: Pattern(0.15, 0.15, n=2, gap_s=1.2),  # double blink
    LedState.ERROR: Pattern(0.08, 0.08, n=3, gap_s=0.6),  # rapid triple blink
}
SIGHTING_FLASH_S = 0.15  # how long the steady RUNNING light goes dark for one sighting


def _factory_kwargs(pin_factory: Any) -> dict[str, Any]:
    return {} if pin_factory is None else {"pin_factory": pin_factory}


class StatusLed:
    """The status LED; each :class:`LedState` has its own :class:`Pattern` (``DEFAULT_PATTERNS``)."""

    def __init__(
        self,
        pin: int,
        *,
        flash_s: float = SIGHTING_FLASH_S,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import LED

        self._led: Any = LED(pin, **_factory_kwargs(pin_factory))
        self._flash_s = flash_s
        self._lock = threading.Lock()
        self._state: LedState | None = None
        self._stop = threading.Event()
        self._group_thread: threading.Thread | None = None
        self._flash_timer: threading.Timer | None = None

    @property
    def state(self) -> LedState | None:
        return self._state

    def set_state(self, state: LedState) -> None:
        with self._lock:
            if state == self._state:
                return
            self._state = state
            self._stop_pattern()
            self._start_pattern(DEFAULT_PATTERNS[state])

    def flash(self) -> None:
        """A short dark flash while steady on (RUNNING); other patterns already blink."""
        with self._lock:
            if self._state != LedState.RUNNING:
                return
            self._cancel_flash()
            self._led.off()
            self._flash_timer = threading.Timer(self._flash_s, self._end_flash)
            self._flash_timer.daemon = True
            self._flash_timer.start()

    def close(self) -> None:
        with self._lock:
            if self._led.closed:
                return
            self._stop_pattern()
            self._state = None
            self._led.close()

    def _end_flash(self) -> None:
        with self._lock:
            if self._state == LedState.RUNNING:
                self._led.on()

    def _cancel_flash(self) -> None:
        if self._flash_timer is not None:
            self._flash_timer.cancel()
            self._flash_timer = None

    def _start_pattern(self, p: Pattern) -> None:
        if p.off_s == 0:
            self._led.on()
        elif p.n is None:
            self._led.blink(on_time=p.on_s, off_time=p.off_s, background=True)
        else:
            self._stop = threading.Event()
            self._group_thread = threading.Thread(
                target=self._run_groups, args=(p, self._stop), name="status-led", daemon=True
            )
            self._group_thread.start()

    def _run_groups(self, p: Pattern, stop: threading.Event) -> None:
        while not stop.is_set():
            self._led.blink(on_time=p.on_s, off_time=p.off_s, n=p.n, background=False)
            if stop.wait(p.gap_s):
                break

    def _stop_pattern(self) -> None:
        self._cancel_flash()
        self._stop.set()
        self._led.off()  # also ends a blink, background or not
        if self._group_thread is not None:
            self._group_thread.join()
            self._group_thread = None
            self._led.off()  # the thread may have started one more blink before it saw stop


class Buzzer:
    """An active buzzer: one short beep per sighting, distinct beeps for pause/resume/shutdown.

    Every method returns at once; a new sound cuts the one still playing.
    """

    def __init__(self, pin: int, *, beep_s: float = 0.08, pin_factory: Any = None) -> None:
        from gpiozero import Buzzer as GzBuzzer

        self._buzzer: Any = GzBuzzer(pin, **_factory_kwargs(pin_factory))
        self._beep_s = beep_s

    def sighting(self) -> None:
        """One short beep."""
        self._buzzer.beep(on_time=self._beep_s, off_time=self._beep_s, n=1, background=True)

    def paused(self) -> None:
        """Two short beeps."""
        self._buzzer.beep(on_time=self._beep_s, off_time=self._beep_s, n=2, background=True)

    def resumed(self) -> None:
        """One long beep (four times a short one)."""
        self._buzzer.beep(on_time=4 * self._beep_s, off_time=self._beep_s, n=1, background=True)

    def shutdown(self) -> None:
        """Three long beeps."""
        self._buzzer.beep(on_time=4 * self._beep_s, off_time=2 * self._beep_s, n=3, background=True)

    def close(self) -> None:
        self._buzzer.close()


class Button:
    """The one button, wired to GND with the internal pull-up.

    A short press (released before ``long_press_s``) toggles pause and calls ``on_pause`` or
    ``on_resume``; holding it for ``long_press_s`` calls ``on_shutdown`` once, and its release
    does not toggle pause. ``debounce_s`` is gpiozero's ``bounce_time`` (None when 0), so a
    bouncing contact gives one press. Callbacks run on gpiozero's event threads: keep them quick.
    """

    def __init__(
        self,
        pin: int,
        *,
        long_press_s: float = 3.0,
        debounce_s: float = 0.05,
        on_pause: Callback | None = None,
        on_resume: Callback | None = None,
        on_shutdown: Callback | None = None,
        pin_factory: Any = None,
    ) -> None:
        from gpiozero import Button as GzButton

        self._on_pause = on_pause
        self._on_resume = on_resume
        self._on_shutdown = on_shutdown
        self._lock = threading.Lock()
        self._paused = False
        self._held = False
        self._shutdown_requested = False
        self._button: Any = GzButton(
            pin,
            pull_up=True,
            bounce_time=debounce_s if debounce_s > 0 else None,
            hold_time=long_press_s,
            **_factory_kwargs(pin_factory),
        )
        self._button.when_pressed = self._pressed
        self._button.when_held = self._long_press
        self._button.when_released = self._released

    @property
    def paused(self) -> bool:
        return self._paused

    def close(self) -> None:
        self._button.close()

    def _pressed(self) -> None:
        with self._lock:
            self._held = False

    def _long_press(self) -> None:
        with self._lock:
            self._held = True
            if self._shutdown_requested:
                return
            self._shutdown_requested = True
        log.info("button held: shutdown requested")
        if self._on_shutdown is not None:
            self._on_shutdown()

    def _released(self) -> None:
        with self._lock:
            if self._held or self._shutdown_requested:
                self._held = False
                return
            self._paused = not self._paused
            paused = self._paused
        log.info("button pressed: capture %s", "paused" if paused else "resumed")
        callback = self._on_pause if paused else self._on_resume
        if callback is not None:
            callback()


class Panel:
    """LED, buzzer and button together, as the service sees them.

    ``set_state`` shows the service's state; while paused by the button the LED keeps showing
    PAUSED (except for ERROR) and resumes with the last state set. The service polls ``paused``
    once per frame; ``on_shutdown`` is called once, on the button's long press.
    """

    def __init__(
        self,
        settings: GpioSettings,
        *,
        on_shutdown: Callback | None = None,
        pin_factory: Any = None,
    ) -> None:
        self._on_shutdown = on_shutdown
        self._state = LedState.STARTING
        self.led = StatusLed(settings.led_pin, pin_factory=pin_factory)
        self.buzzer: Buzzer | None = None
        self.button: Button | None = None
        try:
            if settings.buzzer_pin is not None:
                self.buzzer = Buzzer(settings.buzzer_pin, beep_s=settings.beep_s, pin_factory=pin_factory)
            self.button = Button(
                settings.button_pin,
                long_press_s=settings.long_press_s,
                debounce_s=settings.debounce_s,
                on_pause=self._paused,
                on_resume=self._resumed,
                on_shutdown=self._shutdown,
                pin_factory=pin_factory,
            )
        except Exception:
            self.close()
            raise
        self.led.set_state(self._state)

    @property
    def paused(self) -> bool:
        return self.button is not None and self.button.paused

    def set_state(self, state: LedState) -> None:
        if state == LedState.PAUSED:
            raise ValueError("PAUSED is set by the button, not by set_state")
        self._state = state
        self.led.set_state(LedState.PAUSED if self.paused and state != LedState.ERROR else state)

    def sighting(self) -> None:
        """A new sighting: one short beep and a short dark flash of the steady LED."""
        if self.buzzer is not None:
            self.buzzer.sighting()
        self.led.flash()

    def close(self) -> None:
        for device in (self.button, self.buzzer, self.led):
            if device is not None:
                device.close()

    def _paused(self) -> None:
        if self._state != LedState.ERROR:
            self.led.set_state(LedState.PAUSED)
        if self.buzzer is not None:
            self.buzzer.paused()

    def _resumed(self) -> None:
        self.led.set_state(self._state)
        if self.buzzer is not None:
            self.buzzer.resumed()

    def _shutdown(self) -> None:
        if self.buzzer is not None:
            self.buzzer.shutdown()
        if self._on_shutdown is not None:
            self._on_shutdown()
