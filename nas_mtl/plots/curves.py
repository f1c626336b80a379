"""The search over time, from its log: losses, open fraction, temperature, gate trajectories.

These are the figures that say whether a search *decided* (gates driven to 0/1 after the
temperature annealed) or merely stopped, and whether the selected epoch came after the gates
closed (``docs/plots.md``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes

from nas_mtl.plots.figures import new_figure, save_figure

MAX_LINES = 300  # gate trajectories drawn per panel; more is ink, not information


def _mark_epochs(ax: Axes, history: Sequence[Mapping[str, Any]], best: int | None) -> None:
    warm = [r["epoch"] for r in history if r.get("warmup")]
    if warm:
        ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.9", zorder=0)
    if best is not None:
        ax.axvline(best, color="tab:red", linestyle=":", linewidth=1)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in history])


def draw_search_curves(
    history: Sequence[Mapping[str, Any]],
    stem: str | Path,
    best_epoch: int | None = None,
    target_open: float | None = None,
) -> list[Path]:
    """Three panels: losses; open fractions and the open budget; temperature and the price.

    Grey: warm-up (gates held open); red dotted: the selected epoch.
    """
    epochs = np.array([r["epoch"] for r in history])
    fig = new_figure(6.4, 7.0)
    loss_ax, open_ax, temp_ax = fig.subplots(3, 1, sharex=True)
    train = np.array([np.mean(list(r["train_loss"].values())) for r in history])
    loss_ax.plot(epochs, train, label="train (mean over tasks)")
    loss_ax.plot(epochs, _series(history, "val_objective"), label="validation (supernet)")
    derived = _series(history, "derived_val_objective")
    if not np.all(np.isnan(derived)):
        loss_ax.plot(epochs, derived, label="validation (derived architecture)")
    if np.nanmin(train) > 0 and np.nanmax(train) / np.nanmin(train) > 20:
        loss_ax.set_yscale("log")
    loss_ax.set_ylabel("loss")
    for key, label in (
        ("open_fraction", "derived (selectable) open fraction"),
        ("greedy_open_fraction", "greedy open fraction"),
        ("expected_open", "expected open fraction"),
        ("undecided", "undecided (0.2 < P < 0.8)"),
    ):
        values = _series(history, key)
        if not np.all(np.isnan(values)):
            open_ax.plot(epochs, values, label=label)
    budget = _series(history, "budget")
    if not np.all(np.isnan(budget)):
        open_ax.plot(epochs, budget, color="grey", linestyle=":", label="open budget")
    if target_open is not None:
        open_ax.axhline(target_open, color="black", linestyle="--", linewidth=1, label="target")
    open_ax.set_ylim(-0.02, 1.02)
    open_ax.set_ylabel("fraction of gated pairs")
    temp = _series(history, "temperature")
    mult = _series(history, "price")
    if not np.all(np.isnan(temp)):
        temp_ax.plot(epochs, temp, color="tab:purple", label="temperature τ")
        temp_ax.set_yscale("log")
    temp_ax.set_ylabel("temperature")
    if np.nanmax(np.abs(mult), initial=0.0) > 0:  # a price that never rose says nothing
        has_temp = not np.all(np.isnan(temp))  # SNR's gates have no temperature: one axis
        mult_ax = temp_ax.twinx() if has_temp else temp_ax
        mult_ax.plot(epochs, mult, color="tab:orange", label="price μ of open pairs")
        mult_ax.set_ylabel("price μ" if has_temp else "price μ of open pairs")
        if has_temp:
            mult_ax.legend(fontsize=7, loc="upper right")
    temp_ax.set_xlabel("search epoch")
    for ax in (loss_ax, open_ax, temp_ax):
        _mark_epochs(ax, history, best_epoch)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left" if ax is temp_ax else "best")
    loss_ax.set_title("search (grey: warm-up; red: selected epoch)", fontsize=9)
    return save_figure(fig, stem)


def gate_trajectories(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, np.ndarray]]:
    """Per learned gate block, its variables' open probability per epoch, (epochs, variables).

    Pairs the gate can never open (masked) and tied copies (Gumbel variables shared by a
    component's out-edges) are dropped, so each line is one decision.
    """
    records = [r for r in history if r.get("gates")]
    if not records:
        return []
    out = []
    for b, gate in enumerate(records[0]["gates"]):
        stack = np.stack(
            [np.asarray(r["gates"][b]["open_probability"], dtype=float).ravel() for r in records]
        )
        stack = stack[:, np.any(stack != 0.0, axis=0)]
        stack = np.unique(stack.round(6), axis=1) if stack.size else stack
        dst = gate["dst"]
        name = f"{gate['kind']}: {gate['src'][0]}… → {dst[0]}{'…' if len(dst) > 1 else ''}"
        out.append((name, stack))
    return out


def draw_gate_trajectories(
    history: Sequence[Mapping[str, Any]], stem: str | Path, best_epoch: int | None = None
) -> list[Path]:
    """One panel per gate block: every decision's P(open) over the search, coloured by its end.

    Blue ends open (P > 0.5), grey ends closed; the black line is the block's mean.
    """
    blocks = gate_trajectories(history)
    if not blocks:
        raise ValueError("the search log has no learned gates to draw")
    epochs = np.array([r["epoch"] for r in history if r.get("gates")])
    cols = min(3, len(blocks))
    rows = -(-len(blocks) // cols)
    fig = new_figure(3.4 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    for ax, (name, series) in zip(axes, blocks, strict=False):
        if series.shape[1] > MAX_LINES:
            series = series[:, np.linspace(0, series.shape[1] - 1, MAX_LINES).astype(int)]
        ends_open = series[-1] > 0.5
        for i in range(series.shape[1]):
            ax.plot(
                epochs,
                series[:, i],
                linewidth=0.6,
                alpha=0.35,
                color="tab:blue" if ends_open[i] else "0.55",
            )
        ax.plot(epochs, series.mean(axis=1), color="black", linewidth=1.5)
        _mark_epochs(ax, history, best_epoch)
        ax.set_title(f"{name} ({series.shape[1]})", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes[len(blocks) :]:
        ax.set_visible(False)
    axes[0].set_ylabel("P(open)")
    return save_figure(fig, stem)
