"""Which trial a tune hands over: the Pareto front of (quality, cost) and the pick rule.

Both objectives are lower-is-better. ``"best"`` takes the best quality on the front (the
cheaper one on a tie); ``"cheapest_within"`` takes the cheapest front point whose quality is
within ``tolerance`` (relative) of the best: a model that is a hair worse and much cheaper
is usually the one to ship.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial

from nas_mtl.errors import ConfigError

PICKS = ("best", "cheapest_within")


def pareto_front(values: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates (all objectives minimized).

    >>> pareto_front([(1.0, 5.0), (2.0, 1.0), (2.0, 6.0), (1.0, 5.0)])
    [0, 1, 3]
    """

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and tuple(a) != tuple(b)

    return [i for i, v in enumerate(values) if not any(dominates(w, v) for w in values)]


def pick_index(values: Sequence[Sequence[float]], rule: str, tolerance: float = 0.0) -> int:
    """The index of the picked point among ``values`` = [(quality, cost?), ...] (a front).

    >>> front = [(0.100, 900.0), (0.101, 500.0), (0.120, 100.0)]
    >>> pick_index(front, "best"), pick_index(front, "cheapest_within", 0.01)
    (0, 1)
    """
    if not values:
        raise ValueError("pick_index needs at least one point")
    if rule not in PICKS:
        raise ConfigError(f"[tune] pick = {rule!r} is not one of {', '.join(PICKS)}")

    def cost(i: int) -> float:
        return values[i][1] if len(values[i]) > 1 else 0.0

    best_q = min(v[0] for v in values)
    if rule == "best":
        return min(range(len(values)), key=lambda i: (values[i][0], cost(i)))
    limit = best_q + tolerance * abs(best_q)
    within = [i for i, v in enumerate(values) if v[0] <= limit]
    return min(within, key=lambda i: (cost(i), values[i][0]))


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials on the Pareto front (one objective: the best trial), by number."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return []
    front = pareto_front([t.values for t in complete])
    return sorted((complete[i] for i in front), key=lambda t: t.number)


def pick_trial(study: optuna.Study, rule: str, tolerance: float) -> FrozenTrial | None:
    """The trial the pick rule chooses from the front; None when no trial completed."""
    front = front_trials(study)
    if not front:
        return None
    return front[pick_index([t.values for t in front], rule, tolerance)]
