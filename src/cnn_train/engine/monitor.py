"""What a run monitors (`trainer.monitor`): the metric that picks best.pt, drives the plateau
schedule and early stopping, and which way is better."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnn_train.errors import UserError

# The monitors a user can choose, and whether a larger value is better.
MONITORS = {
    "val/acc1": "max",
    "val/acc5": "max",
    "val/loss": "min",
    "val_ema/acc1": "max",
    "val_ema/loss": "min",
}


@dataclass(frozen=True)
class Monitor:
    """One monitored metric: its name (`val/loss`) and direction (`min` or `max`)."""

    name: str
    mode: str

    @classmethod
    def named(cls, name: str) -> Monitor:
        """The monitor `trainer.monitor` names, or a UserError listing the choices."""
        if name not in MONITORS:
            raise UserError(f"trainer.monitor={name} is not one of {', '.join(MONITORS)}")
        return cls(name, MONITORS[name])

    @property
    def record_key(self) -> str:
        """Its key in an epoch's record (metrics.jsonl): `val/loss` is `val_loss`."""
        return self.name.replace("/", "_")

    @property
    def uses_ema(self) -> bool:
        return self.name.startswith("val_ema/")

    def improves(self, value: float, best: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` beats `best` by more than `min_delta` (any value beats no best)."""
        if best is None or not math.isfinite(best):
            return math.isfinite(value)
        return value > best + min_delta if self.mode == "max" else value < best - min_delta
