"""The retrained model of a run directory: architecture.json + retrain_best.pt + regime.

Serving needs three files that retraining leaves in ``RUN_DIR`` (docs/runs.md,
docs/serving.md): the derived architecture, the best retrained weights
(``checkpoints/retrain_best.pt``, kept after the run) and ``preprocessing.json``, whose data
regime decides how the pruned model groups its components (and so its weights' layout).
"""

from __future__ import annotations

from pathlib import Path

from nas_mtl.errors import CheckpointError, ConfigError
from nas_mtl.model.graph_files import load_architecture
from nas_mtl.model.supernet import Supernet
from nas_mtl.serving.preprocessing import Preprocessing, read_preprocessing
from nas_mtl.stages.checkpoint import load_checkpoint

WEIGHTS = Path("checkpoints") / "retrain_best.pt"


def load_run_model(run_dir: str | Path) -> tuple[Supernet, Preprocessing]:
    """The retrained pruned model (eval mode, CPU) and the run's preprocessing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(
            f"{run_dir} is not a folder; give a run directory OUT/<variant>/<space>/seed_<s>"
        )
    arch_file = run_dir / "architecture.json"
    if not arch_file.exists():
        raise ConfigError(
            f"{arch_file} not found: {run_dir} is not a derived run directory; give "
            f"OUT/<variant>/<space>/seed_<s> of a finished run"
        )
    weights = run_dir / WEIGHTS
    if not weights.exists():
        raise ConfigError(
            f"{weights} not found: the architecture was not retrained; run `nas-mtl retrain "
            f"{run_dir}` first"
        )
    pre = read_preprocessing(run_dir)
    net = Supernet(load_architecture(arch_file).graph, pre.regime)
    state = load_checkpoint(weights)
    try:
        net.load_state_dict(state["model"])
    except (KeyError, RuntimeError):
        raise CheckpointError(
            f"{weights} does not hold the weights of {arch_file}; retrain the run "
            f"(`nas-mtl retrain {run_dir}`)"
        ) from None
    names = [t.name for t in pre.tasks]
    if names != list(net.tasks):
        raise ConfigError(
            f"{run_dir}: preprocessing.json names tasks {names} but the architecture has "
            f"{list(net.tasks)}; retrain the run to rewrite it"
        )
    return net.eval(), pre
