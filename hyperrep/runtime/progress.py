"""Progress callbacks: every long job takes `progress(done, total)`; these adapt it for a display."""

from __future__ import annotations

from typing import Callable


class ThrottledProgress:
    """A `progress(done, total)` callback that passes on only every `step` of the way (and the end),
    so a fast loop does not flood the browser with redraws: `show(fraction, text)` is called."""

    def __init__(self, show: Callable[[float, str], None], unit: str, step: float = 0.05):
        self.show, self.unit, self.step, self.last = show, unit, step, -1.0

    def __call__(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        if fraction - self.last >= self.step or done >= total:
            self.last = fraction
            self.show(min(fraction, 1.0), f"{done:,}/{total:,} {self.unit}")
