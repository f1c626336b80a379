"""Temperature schedules for gates, relative to the search's length or to the global step.

Why relative: the Gumbel-Matrix paper's ``τ = max(τ_min, τ_0 / sqrt(step + 1))`` was tuned for
about 10⁵ steps; a search of a few thousand steps ends with τ far above τ_min and undecided
allocations. A relative schedule reaches τ_min when the annealing phase ends, whatever the
number of steps. The formulas are in ``docs/search.md`` ("Schedules").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("exponential", "linear", "sqrt_step")


@dataclass(frozen=True)
class SchedulePosition:
    """Where the search is: the global step and the steps of warm-up and annealing.

    ``anneal_steps`` counts the steps after warm-up over which temperatures go from their start
    to their end value; later steps stay at the end value.
    """

    step: int = 0
    warmup_steps: int = 0
    anneal_steps: int = 1
    kind: str = "exponential"

    @property
    def progress(self) -> float:
        """0 during warm-up, then rises linearly to 1 when annealing ends."""
        done = self.step - self.warmup_steps
        return min(max(done / max(self.anneal_steps, 1), 0.0), 1.0)


def sqrt_step_temperature(step: int, tau0: float, tau_min: float) -> float:
    """The paper's schedule τ = max(τ_min, τ_0 / sqrt(step + 1)) (Maziarz et al. 2019)."""
    return max(tau_min, tau0 / math.sqrt(step + 1))


def temperature(pos: SchedulePosition, tau0: float, tau_min: float) -> float:
    """τ at ``pos``: linear or exponential from τ_0 to τ_min over annealing, or ``sqrt_step``."""
    if pos.kind == "sqrt_step":
        return sqrt_step_temperature(pos.step, tau0, tau_min)
    p = pos.progress
    if pos.kind == "linear":
        return tau0 + (tau_min - tau0) * p
    if pos.kind == "exponential":
        return tau0 * (tau_min / tau0) ** p
    raise ValueError(f"unknown schedule {pos.kind!r}; known: {', '.join(SCHEDULES)}")
