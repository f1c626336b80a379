"""What search and retraining share: devices, batches for both data regimes, losses, evaluation.

Kept in one place so the search loop and the retrain loop cannot drift apart in how they feed
data or score a model. The step loop never waits for the device: losses are summed on it and
read once per epoch, where the finiteness check runs too (``docs/speed.md``, "Host syncs").
What a stage adds to the loop (the search's architecture step) comes in through
:mod:`nas_mtl.stages.training_hooks`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from nas_mtl.data import MultiTaskData
from nas_mtl.errors import ConfigError, TrainingError
from nas_mtl.model.supernet import Supernet
from nas_mtl.stages import distributed
from nas_mtl.stages.allocator import keep_freed_memory
from nas_mtl.stages.batches import place_split, steps_in_epoch, train_batches
from nas_mtl.stages.checkpoint import (
    history_until,
    last_epoch_checkpoint,
    load_checkpoint,
    prune_epoch_checkpoints,
    save_atomic,
)
from nas_mtl.stages.evaluation import (
    Evaluation,
    autocast,
    compile_model,
    configure_device,
    evaluate,
    full_precision,
    resolve_device,
    task_losses,
    weighted_loss,
)
from nas_mtl.stages.threads import choose_threads, training_threads
from nas_mtl.stages.training_hooks import EpochVerdict, TrainingHooks
from nas_mtl.storage import append_jsonl

log = logging.getLogger(__name__)


class EarlyStopping:
    """Stop after ``patience`` epochs without a better validation loss; remember the best."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ConfigError(f"patience must be >= 1, got patience={patience}")
        self.patience = patience
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record one epoch; True when this epoch is the best so far."""
        if value < self.best:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience


def check_finite(loss: float, where: str) -> None:
    """Fail when an epoch's mean training loss is NaN or infinite.

    Checked on the epoch's sum, read once at its end, rather than per step: a per-step check
    would make every step wait for the device. A step that diverges poisons every later sum
    (NaN and inf stay NaN or inf), so the epoch in which it happened is the one named.
    """
    if not math.isfinite(loss):
        raise TrainingError(
            f"{where}: the loss became {loss}; lower the learning "
            f"rate or check the data for extreme values"
        )


@dataclass
class FitResult:
    """A trained model with its best validation epoch restored, and the per-epoch history."""

    model: nn.Module
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    device: str = "cpu"
    threads: int = 0  # the intra-op threads it trained with


def _step_losses(
    net: Callable[..., dict[str, Tensor]],
    data: MultiTaskData,
    x: Tensor,
    y: Tensor,
    device: torch.device,
    amp: bool,
) -> dict[str, Tensor]:
    # a no-op when the split is already on the device (place_split)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    per_task = data.regime == "per_task"
    with autocast(device, amp):
        out = net(x, tasks=list(data.task_names)) if per_task else net(x)
    return task_losses(out, y, data.tasks, per_task)


def _probe_losses(
    net: nn.Module, data: MultiTaskData, x: Tensor, y: Tensor, device: torch.device
) -> dict[str, Tensor]:
    """The step's per-task losses in full float32 (no autocast, no TF32), for a probe that
    compares nearby losses (the search's gradient affinity, docs/speed.md)."""
    with full_precision(device):
        return _step_losses(net, data, x, y, device, amp=False)


@dataclass(frozen=True)
class TrainConfig:
    """What the one training loop needs; search and retrain each build one from the study."""

    epochs: int
    batch_size: int
    lr: float  # Adam on model weights
    steps_per_epoch: int | None = None
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better selection objective before stopping
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    keep_checkpoints: int = 2
    checkpoint_every_s: float = 0.0  # 0: after every epoch
    compile: bool = False  # torch.compile the training forward (docs/speed.md)
    threads: int = 0  # intra-op threads on the CPU; 0: by the step's FLOPs (stages/threads.py)


_SHARED_FIELDS = (
    "epochs",
    "batch_size",
    "steps_per_epoch",
    "weight_decay",
    "patience",
    "device",
    "compile",
    "threads",
    "checkpoint_every_s",
)


def train_config(stage: Any, **fields: Any) -> TrainConfig:
    """The loop's settings from a study stage ([search] or [retrain]) plus ``fields``.

    Both stages name their common settings alike; only the learning rate and checkpointing
    differ, and the caller gives those.
    """
    return TrainConfig(**{f: getattr(stage, f) for f in _SHARED_FIELDS}, **fields)


def adam(params: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam as one fused kernel per tensor where torch has it (CUDA; the CPU since torch 2.4).

    The unfused step is about ten ops per parameter tensor, each a few microseconds of call
    overhead on the small tensors a search trains: on a pruned Gumbel-Matrix model (12
    tensors, 25k weights, one thread) 305 µs a step against 81 µs fused (docs/speed.md).
    """
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # an older torch, or a device without the kernel
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def step_flops(net: Supernet, data: MultiTaskData, cfg: TrainConfig) -> float:
    """Floating-point operations of one training forward pass of ``net`` on a training batch:
    what the thread rule reads (``nas_mtl.stages.threads``). Counted on a copy, with the RNG
    restored, so that the model, its buffers and the training's random stream stay as they
    were."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(net).train()
    gen = torch.Generator().manual_seed(0)
    x, y = next(iter(train_batches(data, data.train, cfg.batch_size, 1, gen)))
    counter = FlopCounterMode(display=False)
    with torch.random.fork_rng(devices=[]), torch.no_grad(), counter:
        _step_losses(probe, data, x, y, torch.device("cpu"), amp=False)
    return float(counter.get_total_flops())


def train(net: Supernet, data: MultiTaskData, cfg: TrainConfig, **kwargs: Any) -> FitResult:
    """:func:`train_loop` on the CPU thread count ``cfg.threads`` names, else the one a resumed
    training's checkpoint recorded, else the count the step's arithmetic calls for
    (``nas_mtl.stages.threads``); the process's count is restored afterwards. Under torchrun
    the ranks keep the count they were started with. Freed memory stays in the process for the
    next step (``nas_mtl.stages.allocator``)."""
    keep_freed_memory()  # activations reuse freed pages (nas_mtl/stages/allocator.py)
    stem = kwargs.get("stem", "model")
    setting = cfg.threads
    if setting == 0 and distributed.world_size() > 1:
        setting = torch.get_num_threads()
    recorded = None
    if kwargs.get("resume"):
        last = last_epoch_checkpoint(kwargs.get("checkpoint_dir"), stem)
        recorded = load_checkpoint(last).get("threads") if last is not None else None
    dev = resolve_device(cfg.device)
    n = choose_threads(setting, dev, partial(step_flops, net, data, cfg), recorded)
    with training_threads(n, stem):
        return dataclasses.replace(train_loop(net, data, cfg, **kwargs), threads=n)


def train_loop(
    net: Supernet,
    data: MultiTaskData,
    cfg: TrainConfig,
    *,
    hooks: TrainingHooks | None = None,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    stem: str = "model",
    progress: bool = False,
    log_path: Path | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> FitResult:
    """The one training loop behind search and retraining.

    Model weights get Adam; ``hooks`` (the search's architecture step) add the gate optimizer,
    penalties, schedules and their own selection rule. Early stopping counts only eligible
    epochs, and the best eligible epoch's state is restored at the end (the last epoch when
    none was eligible). Each epoch appends a JSON line to ``log_path`` and writes
    ``{stem}_epoch_NNN.pt`` (+ ``{stem}_best.pt``) to ``checkpoint_dir``: weights, optimizer
    and hook states, RNG states and the early-stopping state, so that ``resume`` continues a
    killed run from its last epoch and ends exactly where an uninterrupted run ends.

    Inside :func:`distributed.process_group` (torchrun) the ranks train one model data
    parallel: each its shard of the batches, rank 0 judging epochs and writing the files.
    """
    start = time.perf_counter()
    if hooks is not None and distributed.world_size() > 1:
        raise ConfigError(
            f"{stem}: only retraining runs data parallel under torchrun; run search (and "
            f"`nas-mtl run`) as one process"
        )
    main = distributed.is_main()  # writes the log and checkpoints
    dev = resolve_device(cfg.device)
    configure_device(dev)  # TF32 and cuDNN autotuning on CUDA
    last = last_epoch_checkpoint(checkpoint_dir, stem) if resume else None
    if log_path is not None and last is None and main:
        log_path.unlink(missing_ok=True)  # the log describes this training only
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = net.to(dev).train()
    model = distributed.wrap(net, dev)  # DDP under torchrun; else net itself
    forward = compile_model(model, f"[{stem}]") if cfg.compile else model
    tasks = data.tasks
    hooks = hooks or TrainingHooks()
    excluded = {id(p) for p in hooks.parameters_excluded()}
    weights = [p for p in net.parameters() if id(p) not in excluded]
    w_opt = adam(weights, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # the rows go to the GPU once (docs/speed.md, "Data placement"); on the CPU, as they are
    split = hooks.training_split(place_split(data.train, dev), gen)
    n_steps_epoch = steps_in_epoch(data, split, cfg.batch_size, cfg.steps_per_epoch)
    stopper = EarlyStopping(cfg.patience)
    best_state = None
    history: list[dict[str, Any]] = []
    step = 0

    def batch_loss(batch: tuple[Tensor, Tensor]) -> Tensor:
        return weighted_loss(_step_losses(net, data, *batch, dev, cfg.amp), tasks)

    first, done = 0, False
    if last is not None:
        state = load_checkpoint(last)
        net.load_state_dict(state["model"])
        w_opt.load_state_dict(state["w_opt"])
        hooks.load_state(state)
        torch.set_rng_state(state["rng"])
        gen.set_state(state["gen"])
        if dev.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], dev)
        stopper.best, stopper.best_epoch, stopper.bad_epochs = state["stopper"]
        step, first, done = state["step"], state["epoch"] + 1, state["done"]
        history = distributed.from_main(partial(history_until, log_path, state["epoch"]))
        best_file = checkpoint_dir / f"{stem}_best.pt"  # type: ignore[operator]
        if stopper.best_epoch >= 0 and best_file.exists():
            best_state = load_checkpoint(best_file, dev)["model"]
        log.info("%s: resuming after epoch %d from %s", stem, state["epoch"], last)
    epoch = first - 1
    # checkpoints at most every checkpoint_every_s seconds (and after the last epoch): one per
    # epoch cost a small retraining a fifth of its time (docs/speed.md, "Checkpoints")
    saved_at, saved_best = time.perf_counter(), stopper.best_epoch
    bar = tqdm(
        range(first, cfg.epochs if not done else first),
        desc=stem,
        disable=not progress or not main,
        leave=False,
    )
    for epoch in bar:
        t0 = time.perf_counter()
        hooks.start_epoch(net, epoch, n_steps_epoch)
        # the epoch's sums stay on the device (float64: the float32 losses add exactly as
        # Python floats did); the host reads them once, after the last step
        task_sums = torch.zeros(len(tasks), dtype=torch.float64, device=dev)
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        n_steps = n_all = 0
        batches = train_batches(data, split, cfg.batch_size, cfg.steps_per_epoch, gen)
        for (x, y), share in distributed.shard(batches):  # share 1.0 in one process
            hooks.before_step(net, step)
            hooks.inspect_batch(net, step, partial(_probe_losses, net, data, x, y, dev))
            losses = _step_losses(forward, data, x, y, dev, cfg.amp)
            loss = weighted_loss(losses, tasks)
            extra = hooks.extra_loss(net)
            if extra is not None:
                loss = loss + extra
            loss_sum += loss.detach()
            n_all += 1
            if share != 1.0:  # an epoch's last, partial group of rank batches
                loss = loss * share
            w_opt.zero_grad(set_to_none=True)
            hooks.zero_grad()
            loss.backward()
            w_opt.step()
            hooks.after_step(net, batch_loss)
            step += 1
            if share == 0.0:  # a stand-in step that keeps the ranks in lockstep
                continue
            task_sums += torch.stack([losses[t.name].detach() for t in tasks])
            n_steps += 1
        read = torch.cat([task_sums, loss_sum.view(1)]).tolist()  # the epoch's one host read
        names = [t.name for t in tasks]
        train_loss = distributed.mean_over_ranks(dict(zip(names, read[:-1], strict=True)), n_steps)
        # over all ranks, so that every rank stops at the same epoch
        epoch_loss = distributed.mean_over_ranks({"loss": read[-1]}, n_all)["loss"]
        check_finite(epoch_loss, f"{stem} epoch {epoch}")
        distributed.sync_buffers(net)
        ev, verdict = distributed.from_main(partial(_judge, net, data, hooks, dev, cfg.amp))
        improved = verdict.eligible and stopper.step(verdict.objective, epoch)
        if improved or best_state is None and epoch == cfg.epochs - 1:
            best_state = copy.deepcopy(net.state_dict())
        record = {
            "epoch": epoch,
            "step": step,
            "train_loss": train_loss,
            "val_loss": ev.losses,
            "val_objective": ev.loss(tasks),
            "val_metric": ev.primary(tasks),
            "selection_objective": verdict.objective,
            "eligible": verdict.eligible,
            "wall_s": time.perf_counter() - t0,
            **verdict.record,
        }
        history.append(record)
        if log_path is not None and main:
            append_jsonl(log_path, record)
        stop = stopper.should_stop and verdict.may_stop
        last_epoch = stop or epoch == cfg.epochs - 1
        due = time.perf_counter() - saved_at >= cfg.checkpoint_every_s
        if checkpoint_dir is not None and main and (due or last_epoch):
            # the best model first: a crash between the two writes then leaves a best file
            # that the resumed run rewrites, never an epoch checkpoint pointing past it
            if stopper.best_epoch > saved_best:
                best = {"epoch": stopper.best_epoch, "model": best_state}
                save_atomic(best, checkpoint_dir / f"{stem}_best.pt")
                saved_best = stopper.best_epoch
            state = {
                "epoch": epoch,
                "step": step,
                "done": last_epoch,
                "model": net.state_dict(),
                "w_opt": w_opt.state_dict(),
                "rng": torch.get_rng_state(),
                "gen": gen.get_state(),
                "stopper": (stopper.best, stopper.best_epoch, stopper.bad_epochs),
                "threads": torch.get_num_threads(),  # a resume keeps it (stages/threads.py)
                **({"cuda_rng": torch.cuda.get_rng_state(dev)} if dev.type == "cuda" else {}),
                **hooks.state(),
            }
            save_atomic(state, checkpoint_dir / f"{stem}_epoch_{epoch:03d}.pt")
            prune_epoch_checkpoints(checkpoint_dir, stem, cfg.keep_checkpoints)
            saved_at = time.perf_counter()
        if on_epoch is not None:
            on_epoch(record)
        bar.set_postfix(_postfix(record))
        if main:
            log.info("%s epoch %d: %s", stem, epoch, _postfix(record))
        if stop:
            break
    if best_state is None:  # no eligible epoch (stopped early): keep the last one
        best_state = copy.deepcopy(net.state_dict())
    if stopper.best_epoch < 0 and checkpoint_dir is not None and main:  # no selectable epoch
        save_atomic({"epoch": epoch, "model": best_state}, checkpoint_dir / f"{stem}_best.pt")
    net.load_state_dict(best_state)
    distributed.check_in_sync(net, stem)
    return FitResult(
        model=net,
        best_epoch=stopper.best_epoch if stopper.best_epoch >= 0 else len(history) - 1,
        best_val_loss=stopper.best if stopper.best_epoch >= 0 else history[-1]["val_objective"],
        history=history,
        wall_s=time.perf_counter() - start,
        device=str(dev),
    )


def _judge(
    net: nn.Module, data: MultiTaskData, hooks: TrainingHooks, dev: torch.device, amp: bool
) -> tuple[Evaluation, EpochVerdict]:
    """An epoch's validation scores and how it counts for selection."""
    ev = evaluate(net, data, data.val, dev, amp)
    return ev, hooks.end_epoch(net, ev, dev) or EpochVerdict(ev.loss(data.tasks))


def _postfix(record: Mapping[str, Any]) -> dict[str, str]:
    """The progress line: validation objective and, in search, the gate diagnostics."""
    out = {"val": f"{record['val_objective']:.4f}"}
    for key, fmt in (
        ("open_fraction", "{:.2f}"),
        ("undecided", "{:.2f}"),
        ("dead_paths", "{}"),
        ("temperature", "{:.2f}"),
        ("price", "{:.3g}"),
    ):
        if record.get(key) is not None:
            out[key] = fmt.format(record[key])
    return out
