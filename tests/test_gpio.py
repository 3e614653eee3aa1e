"""The GPIO panel against gpiozero's own MockFactory: drive the button pin, read LED/buzzer history."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

pytest.importorskip("gpiozero")
from gpiozero import LED, Button, Buzzer
from gpiozero.pins.mock import MockFactory, MockPin

from firmware.gpio import GpioSettings, LedState, Panel

SETTINGS = GpioSettings(led_pin=17, buzzer_pin=27, button_pin=22, long_press_s=0.3, beep_s=0.05)


class Shutdowns:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> None:
        self.n += 1


@pytest.fixture
def factory() -> MockFactory:
    return MockFactory()


@pytest.fixture
def shutdowns() -> Shutdowns:
    return Shutdowns()


@pytest.fixture
def panel(factory: MockFactory, shutdowns: Shutdowns) -> Iterator[Panel]:
    p = Panel(SETTINGS, on_shutdown=shutdowns, pin_factory=factory)
    yield p
    p.close()


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def press(factory: MockFactory, hold_s: float) -> None:
    pin = factory.pin(SETTINGS.button_pin)
    pin.drive_low()  # pull-up: pressed pulls the pin to GND
    time.sleep(hold_s)
    pin.drive_high()


def pulses(states: list[tuple[float, bool]]) -> list[tuple[float, float | None]]:
    """(on_s, off_s after it) for each complete high pulse; the last off_s may be None."""
    t = 0.0
    edges: list[tuple[float, bool]] = []
    for dt, value in states[1:]:
        t += dt
        if not edges or edges[-1][1] != value:
            edges.append((t, bool(value)))
    out: list[tuple[float, float | None]] = []
    for i, (t_up, value) in enumerate(edges):
        if not value or i + 1 >= len(edges):
            continue
        t_down = edges[i + 1][0]
        off = edges[i + 2][0] - t_down if i + 2 < len(edges) else None
        out.append((t_down - t_up, off))
    return out


def record(
    factory: MockFactory, pin_no: int, window_s: float, action: Callable[[], object]
) -> list[tuple[float, bool]]:
    pin = factory.pin(pin_no)
    pin.clear_states()
    action()
    time.sleep(window_s)
    return [(s.timestamp, bool(s.state)) for s in pin.states]


def group_sizes(ps: list[tuple[float, float | None]]) -> list[int]:
    """Pulses per group, groups split by an off time well above the on time; complete groups only.

    The recording starts with the pattern, so the first group is complete too.
    """
    sizes: list[int] = []
    n = 0
    for on, off in ps:
        n += 1
        if off is not None and off > 3 * on:
            sizes.append(n)
            n = 0
    return sizes


def test_import_does_not_import_gpiozero() -> None:
    code = "import sys, firmware.gpio; assert 'gpiozero' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_led_patterns_are_distinct(panel: Panel, factory: MockFactory) -> None:
    """The real (default) timings, each recorded long enough for one whole cycle."""
    windows = {LedState.STARTING: 1.0, LedState.WAITING_FOR_FIX: 1.6, LedState.RUNNING: 0.5, LedState.ERROR: 1.3}
    seen: dict[LedState, list[tuple[float, float | None]]] = {}
    for state, window_s in windows.items():
        seen[state] = pulses(record(factory, SETTINGS.led_pin, window_s, lambda s=state: panel.set_state(s)))
    # ERROR stays shown while paused, so pause from RUNNING
    running = record(factory, SETTINGS.led_pin, 0.3, lambda: panel.set_state(LedState.RUNNING))
    seen[LedState.PAUSED] = pulses(record(factory, SETTINGS.led_pin, 2.1, lambda: press(factory, 0.02)))
    assert panel.led.state == LedState.PAUSED

    starting, waiting = seen[LedState.STARTING], seen[LedState.WAITING_FOR_FIX]
    assert len(starting) >= 4  # 0.1 s on / 0.1 s off
    assert all(on < 0.15 for on, _ in starting)
    assert len(waiting) == 1  # 0.5 s on / 1.0 s off
    assert all(0.35 < on < 0.7 for on, _ in waiting)
    assert seen[LedState.RUNNING] == []  # steady on: no complete pulse in the window...
    assert running[-1][1] and sum(1 for _, v in running[1:] if not v) <= 1  # ...and on throughout
    assert group_sizes(seen[LedState.ERROR]) and set(group_sizes(seen[LedState.ERROR])) == {3}
    assert group_sizes(seen[LedState.PAUSED]) and set(group_sizes(seen[LedState.PAUSED])) == {2}


def test_short_press_toggles_pause(panel: Panel, factory: MockFactory, shutdowns: Shutdowns) -> None:
    panel.set_state(LedState.RUNNING)
    press(factory, 0.02)
    assert wait_for(lambda: panel.paused)
    assert panel.led.state == LedState.PAUSED
    panel.set_state(LedState.WAITING_FOR_FIX)  # the service's state changes while paused
    assert panel.led.state == LedState.PAUSED
    press(factory, 0.02)
    assert wait_for(lambda: not panel.paused)
    assert panel.led.state == LedState.WAITING_FOR_FIX
    assert shutdowns.n == 0


def test_long_press_shuts_down_once(panel: Panel, factory: MockFactory, shutdowns: Shutdowns) -> None:
    press(factory, SETTINGS.long_press_s + 0.3)
    assert wait_for(lambda: shutdowns.n == 1)
    time.sleep(0.1)
    assert not panel.paused  # the release of a long press does not pause
    press(factory, SETTINGS.long_press_s + 0.2)
    time.sleep(0.1)
    assert shutdowns.n == 1 and not panel.paused


def test_sighting_gives_one_short_beep(panel: Panel, factory: MockFactory) -> None:
    buzzer = factory.pin(SETTINGS.buzzer_pin)
    buzzer.clear_states()
    panel.sighting()
    time.sleep(0.3)
    buzzer.assert_states_and_times([(0.0, False), (0.0, True), (SETTINGS.beep_s, False)])
    assert len(buzzer.states) == 3


def test_pause_and_resume_beeps_differ(panel: Panel, factory: MockFactory) -> None:
    buzzer = factory.pin(SETTINGS.buzzer_pin)
    buzzer.clear_states()
    press(factory, 0.02)
    assert wait_for(lambda: panel.paused)
    time.sleep(0.4)
    paused = pulses([(s.timestamp, bool(s.state)) for s in buzzer.states])
    buzzer.clear_states()
    press(factory, 0.02)
    assert wait_for(lambda: not panel.paused)
    time.sleep(0.4)
    resumed = pulses([(s.timestamp, bool(s.state)) for s in buzzer.states])
    assert len(paused) == 2 and all(on < 2 * SETTINGS.beep_s for on, _ in paused)
    assert len(resumed) == 1 and resumed[0][0] > 3 * SETTINGS.beep_s


def test_sighting_flashes_the_running_led(panel: Panel, factory: MockFactory) -> None:
    panel.set_state(LedState.RUNNING)
    led = factory.pin(SETTINGS.led_pin)
    led.clear_states()
    panel.sighting()
    time.sleep(0.3)
    led.assert_states_and_times([(0.0, True), (0.0, False), (0.15, True)])
    assert led.state


def test_no_buzzer(factory: MockFactory) -> None:
    settings = GpioSettings(led_pin=17, buzzer_pin=None, button_pin=22)
    panel = Panel(settings, pin_factory=factory)
    try:
        panel.set_state(LedState.RUNNING)
        led = factory.pin(settings.led_pin)
        led.clear_states()
        panel.sighting()
        time.sleep(0.3)
        assert panel.buzzer is None
        assert [bool(s.state) for s in led.states] == [True, False, True]  # the LED still flashes
        Buzzer(SETTINGS.buzzer_pin, pin_factory=factory).close()  # the usual buzzer pin was left free
    finally:
        panel.close()


def test_close_releases_the_pins(factory: MockFactory) -> None:
    panel = Panel(SETTINGS, pin_factory=factory)
    panel.set_state(LedState.ERROR)
    panel.close()
    panel.close()  # twice is harmless
    assert not factory.pin(SETTINGS.led_pin).state
    for device in (
        LED(SETTINGS.led_pin, pin_factory=factory),
        Buzzer(SETTINGS.buzzer_pin, pin_factory=factory),
        Button(SETTINGS.button_pin, pin_factory=factory),
    ):
        device.close()


class DebouncedMockPin(MockPin):
    """A MockPin that debounces as the Pi does. gpiozero's own MockPin stores ``bounce`` and
    ignores it; on the Pi gpiozero hands ``bounce_time`` to lgpio (``gpio_set_debounce_micros``),
    which reports a level change only once the new level has been stable that long. This pin
    does the same; with ``bounce`` None it reports every edge at once, as MockPin does."""

    _timer: threading.Timer | None = None
    _reported: bool | None = None

    def drive_high(self) -> None:
        self._drive(True)

    def drive_low(self) -> None:
        self._drive(False)

    def _drive(self, value: bool) -> None:
        assert self._function == "input"
        if not self._change_state(value):
            return
        if self._timer is not None:
            self._timer.cancel()
        if not self._bounce:
            self._report()
            return
        self._timer = threading.Timer(self._bounce, self._settled)
        self._timer.daemon = True
        self._timer.start()

    def _settled(self) -> None:
        if self._state != self._reported:
            self._report()

    def _report(self) -> None:
        self._reported = self._state
        edge = "rising" if self._state else "falling"
        if self._edges in ("both", edge) and self._when_changed is not None:
            self._call_when_changed()


def chatter(pin: MockPin, levels: list[bool], dt_s: float = 0.004) -> None:
    """Contact bounce: the pin flips through ``levels`` a few ms apart (real contacts bounce for 1-10 ms)."""
    for level in levels:
        pin.drive_high() if level else pin.drive_low()
        time.sleep(dt_s)


@pytest.mark.parametrize(("debounce_s", "toggles"), [(SETTINGS.debounce_s, 1), (0.0, 3)])
def test_a_bouncing_press_toggles_pause_once(debounce_s: float, toggles: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="firmware.gpio")
    factory = MockFactory(pin_class=DebouncedMockPin)
    settings = dataclasses.replace(SETTINGS, debounce_s=debounce_s)
    panel = Panel(settings, pin_factory=factory)

    def toggled() -> int:  # one log line per toggle of pause
        return sum("button pressed: capture" in r.getMessage() for r in caplog.records)

    try:
        pin = factory.pin(settings.button_pin)
        assert pin.bounce == (debounce_s or None)  # gpiozero's bounce_time reached the pin
        chatter(pin, [False, True, False])  # pressed, with chatter
        time.sleep(0.15)
        chatter(pin, [True, False, True])  # released, with chatter
        assert wait_for(lambda: toggled() >= toggles)
        time.sleep(0.2)
        assert toggled() == toggles
        assert panel.paused is (toggles % 2 == 1)
    finally:
        panel.close()


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="differ"):
        GpioSettings(led_pin=22, button_pin=22)
    with pytest.raises(ValueError, match="long_press_s"):
        GpioSettings(long_press_s=0)
    with pytest.raises(ValueError, match="debounce_s"):
        GpioSettings(debounce_s=-0.01)
    assert GpioSettings().debounce_s == 0.05
