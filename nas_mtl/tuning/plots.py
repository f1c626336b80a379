"""Optuna's own figures of a tune, as PNG files in ``OUT/plots`` (headless, atomic).

The optimization history (quality by trial), the search curves the pruner judged, the
parameter importances (two or more params, enough complete trials) and, for two objectives,
the Pareto front with the picked trial marked. A figure that Optuna cannot draw yet (too few
trials) is skipped with a log line: pictures never fail a tune.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import optuna.visualization.matplotlib as ovm
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from nas_mtl.plots.figures import save_figure  # selects the headless Agg backend
from nas_mtl.tuning.config import TunePlan
from nas_mtl.tuning.pareto import front_trials
from nas_mtl.tuning.store import quiet_experimental

log = logging.getLogger(__name__)

PLOTS = "plots"
MIN_TRIALS_IMPORTANCE = 3  # an importance from fewer complete trials says nothing
SIZE = (7.5, 4.5)  # inches: readable at 130 dpi in a report or a terminal image viewer


def quality_label(plan: TunePlan) -> str:
    if plan.config.objective == "search":
        return "quality (search's val. loss, lower is better)"
    return "quality (mean val. metric, lower is better)"


def write_plots(
    study: optuna.Study, plan: TunePlan, out: Path, picked: FrozenTrial | None
) -> list[Path]:
    """Every figure that the trials so far support; returns the PNG paths written."""
    folder = out / PLOTS
    quality = quality_label(plan)
    first: Callable[[FrozenTrial], float] | None = None
    if plan.multi_objective:
        first = lambda t: t.values[0]  # noqa: E731
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figures: dict[str, Callable[[], Axes]] = {
        "optimization_history": lambda: _history(study, first, quality),
    }
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        figures["intermediate_values"] = lambda: _intermediate(study, plan)
    if len(plan.params) >= 2 and len(complete) >= MIN_TRIALS_IMPORTANCE:
        figures["param_importances"] = lambda: _importances(study, first, quality)
    if plan.multi_objective:
        cost = "MACs per example" if plan.config.directions[1] == "macs" else "parameters"
        figures["pareto_front"] = lambda: _pareto(study, [quality, cost], picked)
    written = []
    for name, draw in figures.items():
        try:
            with quiet_experimental(), warnings.catch_warnings():
                # PED-ANOVA reminds that it ranks for low values: ours are lower-is-better
                warnings.filterwarnings("ignore", "PedAnovaImportanceEvaluator", UserWarning)
                ax = draw()
        except (ValueError, RuntimeError) as e:  # too few trials for this figure, for now
            log.info("plot %s skipped: %s", name, e)
            continue
        fig = ax.figure
        fig.set_size_inches(*SIZE)
        fig.tight_layout()
        written += save_figure(fig, folder / name, ("png",))
    return written


def _history(study: optuna.Study, target: Callable[[FrozenTrial], float] | None, name: str) -> Axes:
    ax = ovm.plot_optimization_history(study, target=target, target_name=name)
    ax.legend(loc="best", fontsize=8)  # Optuna's legend beside the axes halves them
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return ax


def _importances(
    study: optuna.Study, target: Callable[[FrozenTrial], float] | None, name: str
) -> Axes:
    ax = ovm.plot_param_importances(study, target=target, target_name=name)
    ax.legend(loc="lower right", fontsize=8)  # bars shrink downwards: the top one is longest
    return ax


LEGEND_ROWS = 14  # trials listed per legend column


def _intermediate(study: optuna.Study, plan: TunePlan) -> Axes:
    ax = ovm.plot_intermediate_values(study)
    ax.set_title("Search curves seen by the pruner")
    ax.set_xlabel("search epoch")
    ax.set_ylabel("selection loss (val.)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(plan.seeds) > 1:  # each seed's search runs on the step axis: one segment per seed
        _split_by_seed(ax, plan.study.search.epochs, plan.seeds)
    legend = ax.get_legend()
    if legend is not None and len(legend.get_texts()) > LEGEND_ROWS:
        # Optuna's one-column legend beside the axes runs off the figure past ~15 trials
        ax.legend(
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=6,
            ncol=-(-len(legend.get_texts()) // LEGEND_ROWS),
        )
    return ax


def _split_by_seed(ax: Axes, epochs: int, seeds: tuple[int, ...]) -> None:
    """Break each curve where one seed's search ends and the next begins (step k·epochs), so
    no line joins two seeds, and mark the seeds on the axis."""
    for line in list(ax.get_lines()):
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        cut = np.flatnonzero(np.diff(x // epochs) != 0) + 1
        if not len(cut):
            continue
        line.set_data(np.insert(x, cut, np.nan), np.insert(y, cut, np.nan))
    for k, seed in enumerate(seeds):
        if k:
            ax.axvline(k * epochs, color="0.5", linestyle="--", linewidth=0.8)
        ax.annotate(
            f"seed {seed}",
            xy=((k + 0.02) * epochs, 0.98),
            xycoords=("data", "axes fraction"),
            va="top",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlabel(f"search epoch, the seeds one after another ({epochs} epochs each)")


def _pareto(study: optuna.Study, names: list[str], picked: FrozenTrial | None) -> Axes:
    ax = ovm.plot_pareto_front(study, target_names=names)
    for trial in front_trials(study):  # which trial each front point is
        ax.annotate(
            str(trial.number),
            trial.values,
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    if picked is not None:
        ax.scatter(
            [picked.values[0]],
            [picked.values[1]],
            s=220,
            facecolors="none",
            edgecolors="black",
            linewidths=1.8,
            label=f"picked: trial {picked.number}",
            zorder=5,
        )
    handles, labels = ax.get_legend_handles_labels()
    rename = {"Trial": "dominated trial", "Best Trial": "Pareto front"}
    ax.legend(handles, [rename.get(x, x) for x in labels], loc="best", fontsize=8)
    return ax
