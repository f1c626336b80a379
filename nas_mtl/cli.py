"""``nas-mtl``: a thin command line over the library (parse, call, print).

Every user mistake is one line on stderr and exit code 2; a bug is one line naming the file
that holds its traceback (inside --out when it exists, else the temp folder) and exit code 3.
"""

from __future__ import annotations

import os

# OpenMP spin-waiting made training 7-40x slower on busy 2-core machines; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from nas_mtl.cli_parser import build_parser  # noqa: E402
from nas_mtl.errors import ConfigError, NasMtlError  # noqa: E402

EXIT_FAILED_RUNS = 1  # the study ran, but some runs are not results (see report.md)
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "verbose", False):  # the commands print the search's warnings
        logging.getLogger("nas_mtl.stages.search").setLevel(logging.ERROR)  # themselves, once
    try:
        return COMMANDS[args.command](args)
    except NasMtlError as e:
        print(f"nas-mtl: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # the reader went away (`nas-mtl report OUT | head`): not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("nas-mtl: interrupted; finished results are on disk", file=sys.stderr)
        return 130
    except Exception as e:
        if _out_of_memory(e):  # a size the machine cannot hold: the user's to change
            print(
                f"nas-mtl: error: out of memory ({str(e).strip().splitlines()[0][:160]}): the "
                "study asks for more memory than this machine has; reduce its sizes (rows, "
                "widths, components, batch_size)",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        log_path = _crash_log(getattr(args, "out", None))  # a bug: the traceback in a file
        print(
            f"nas-mtl: internal error ({type(e).__name__}: {e}); please report it with the "
            f"traceback in {log_path}",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that failed for its size: numpy's MemoryError (or its
    "array is too big"), torch's CPU allocator's RuntimeError or CUDA's OutOfMemoryError."""
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, (RuntimeError, ValueError))
        and any(s in text for s in ("can't allocate memory", "array is too big", "out of memory"))
    )


def _crash_log(out: Path | None) -> Path:
    """Write the current traceback to OUT/nas-mtl-error.log when OUT exists, else a temp file."""
    import tempfile
    import traceback

    text = traceback.format_exc()
    if out is not None and Path(out).is_dir():
        path = Path(out) / "nas-mtl-error.log"
        path.write_text(text)
        return path
    fd, name = tempfile.mkstemp(prefix="nas-mtl-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(name)


def _spaces(args: argparse.Namespace) -> int:
    from nas_mtl.model.spaces import list_spaces

    rows = list_spaces()
    width = max(len(name) for name, _ in rows)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from nas_mtl.pipeline import run_study
    from nas_mtl.report import comparison_tables
    from nas_mtl.results import RunResult
    from nas_mtl.rundir import default_out
    from nas_mtl.study import load_study

    study = load_study(args.study)
    out = args.out or default_out(study)
    start = time.perf_counter()
    print(
        f"nas-mtl: study '{study.name}': spaces {', '.join(study.spaces)}; output {out}", flush=True
    )

    def progress(result: RunResult) -> None:
        gates = f"  open {result.architecture['open_fraction']:.3f}" if result.searched else ""
        n = result.retrain.get("threads")  # a fixed rule's count (docs/speed.md, "Threads")
        threads = f", {n} thread{'s' if n != 1 else ''}" if n else ""
        print(
            f"  {result.space:<14} seed {result.seed}  mean test {result.mean_test:.4f}"
            f"{gates}  ({result.wall_s:.1f} s{threads})",
            flush=True,
        )
        if result.failure:
            print(f"  {'':<14} FAILED: {result.failure}", flush=True)
        for warning in [*result.search.get("warnings", []), *result.retrain.get("warnings", [])]:
            print(f"  {'':<14} warning: {warning}", flush=True)

    report = run_study(
        study,
        out,
        seeds=args.seed,
        device=args.device,
        data_dir=args.data_dir,
        progress=sys.stderr.isatty(),
        on_result=progress,
        overwrite=args.overwrite,
        workers=args.workers,
    )
    print()
    print(comparison_tables(report))
    print(f"nas-mtl: done in {time.perf_counter() - start:.1f} s; report: {out / 'report.md'}")
    if report["failed"]:
        print(f"nas-mtl: {len(report['failed'])} run(s) failed:", file=sys.stderr)
        for line in report["failed"]:
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED_RUNS
    return 0


def _describe(args: argparse.Namespace) -> int:
    from nas_mtl.describe import describe_study, format_summaries
    from nas_mtl.study import load_study

    study = load_study(args.study)
    print(f"study '{study.name}': supernets on its data (MACs per example, all tasks)")
    print(format_summaries(describe_study(study, args.data_dir)))
    return 0


def _search(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nas_mtl.pipeline import run_search
    from nas_mtl.rundir import check_out, default_out, open_run_dir, out_lock, prepare_out
    from nas_mtl.study import load_study
    from nas_mtl.study_data import load_data

    study = load_study(args.study)
    if args.device:
        study = replace(study, search=replace(study.search, device=args.device))
    seed = args.seed if args.seed is not None else study.seeds[0]
    out = args.out or default_out(study)
    check_out(out)
    with out_lock(out):
        prepare_out(study, out, overwrite=args.overwrite)
        for variant in study.variants():
            run_dir = open_run_dir(out, variant, args.space, seed)
            data = load_data(study, variant, seed, args.data_dir)
            _, info = run_search(
                study.for_variant(variant), args.space, data, seed, run_dir, sys.stderr.isatty()
            )
            print(f"{run_dir}: {info}")
    return 0


def _derive(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from nas_mtl.pipeline import load_searched, run_derive, run_provenance
    from nas_mtl.rundir import study_of_run
    from nas_mtl.study_data import load_data

    study, ctx = study_of_run(args.run_dir)
    if args.samples is not None:
        study = replace(study, derive=replace(study.derive, samples=args.samples))
    data = load_data(study, ctx["variant"], ctx["seed"], args.data_dir)
    net = load_searched(args.run_dir)
    seed = ctx["seed"]
    why = run_provenance(study, ctx["variant"], ctx["space"], seed)
    arch = run_derive(net, study, data, seed, args.run_dir, why)
    n_comp = sum(1 for _, r in arch.nodes(data="role") if r == "component")
    print(
        f"{args.run_dir / 'architecture.json'}: {n_comp} components, {arch.number_of_edges()} edges"
    )
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from nas_mtl.pipeline import retrain_run
    from nas_mtl.stages.distributed import is_main

    metrics = retrain_run(
        args.run_dir, device=args.device, data_dir=args.data_dir, progress=sys.stderr.isatty()
    )
    if not is_main():  # under torchrun every rank has the metrics; rank 0 prints them
        return 0
    for task, values in metrics.items():
        print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    return 0


def _report(args: argparse.Namespace) -> int:
    from nas_mtl.report import comparison_tables, load_report

    print(comparison_tables(load_report(args.run_dir)))
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from nas_mtl.rundir import study_of_run
    from nas_mtl.study_export import write_grouped_study
    from nas_mtl.task_groups import (
        EMBEDDINGS,
        figures_folder,
        format_groups,
        read_groups,
        task_groups,
        write_groups,
    )

    truth = read_groups(args.groups) if args.groups else None
    embeddings = EMBEDDINGS if args.embedding == "both" else (args.embedding,)
    found = task_groups(args.path, args.k, args.metric, args.method, truth, embeddings)
    if args.space is not None:
        found = [g for g in found if g.space.split(" (")[0] == args.space]
        if not found:
            raise ConfigError(f"--space {args.space}: no searched run of that space in {args.path}")
    print(format_groups(found))
    written = write_groups(found, figures_folder(args.path))
    print(f"nas-mtl: wrote {len(written)} files to {written[-1].parent}")
    if args.export_study is not None:
        spaces = {g.space for g in found}
        if len(spaces) != 1:
            raise ConfigError(
                f"--export-study: {len(spaces)} searched spaces were clustered "
                f"({', '.join(sorted(spaces))}); choose one with --space"
            )
        chosen = (
            next(g for g in found if g.embedding == "allocation") if len(found) > 1 else found[0]
        )
        study, _ = study_of_run(chosen.run_dirs[0])
        path = write_grouped_study(
            study.path, chosen.groups(), chosen.space.split(" (")[0], args.export_study
        )
        print(f"nas-mtl: wrote {path}: run it with `nas-mtl run {path}`")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from nas_mtl.plots.run_plots import plot_run

    written = plot_run(args.run_dir, target_open=_target_open(args.run_dir))
    print(f"nas-mtl: wrote {len(written)} files to {args.run_dir / 'plots'}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    import optuna

    from nas_mtl.study import load_study
    from nas_mtl.tuning import tune
    from nas_mtl.tuning.outputs import trial_line

    if not args.verbose:
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial, printed here
    study = load_study(args.study)
    names = list(study.tune.directions)
    if args.worker is None:
        print(f"nas-mtl: tuning '{study.name}' to {args.trials} finished trials", flush=True)
    outcome = tune(
        study,
        args.trials,
        out=args.out,
        storage=args.storage,
        study_name=args.study_name,
        workers=args.workers,
        data_dir=args.data_dir,
        device=args.device,
        on_trial=lambda trial: print(trial_line(trial, names), flush=True),
        worker=args.worker,
        progress=sys.stderr.isatty() and args.workers == 1 and args.worker is None,
    )
    if args.worker is not None:
        return 0
    c = outcome.counts
    print(
        f"nas-mtl: {outcome.ran} trial(s) run now; the study '{outcome.study_name}' has "
        f"{c.complete} complete, {c.finished - c.complete} pruned, {c.failed} failed "
        f"({outcome.storage})"
    )
    if outcome.picked is None:
        print("nas-mtl: no trial completed: nothing to pick", file=sys.stderr)
        return EXIT_FAILED_RUNS
    print(f"nas-mtl: picked {trial_line(outcome.picked, names).strip()}")
    plots = [f for f in outcome.files if f.parent.name == "plots"]
    best = ", ".join(str(f) for f in outcome.files if f not in plots)
    print(f"nas-mtl: wrote {best} (nas-mtl retrain {outcome.out / 'best'} retrains the pick)")
    print(f"nas-mtl: {len(plots)} plot(s) in {outcome.out / 'plots'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nas_mtl.serving.export import export_run
    from nas_mtl.serving.packed import DEFAULT_BATCH_HINT

    hint = DEFAULT_BATCH_HINT if args.batch_hint is None else args.batch_hint
    done = export_run(args.run_dir, args.task, args.out, batch_hint=hint)
    what = f"task '{args.task}': a tensor" if args.task else "every task: a dict"
    shape = ", ".join(map(str, done.input_shape))
    print(f"nas-mtl: wrote {done.path} (input (B, {shape}), {what}); load it with")
    print(f"  torch.export.load('{done.path}').module()(x)   (docs/serving.md)")
    if not done.packed:
        print("nas-mtl: note: image model, exported as the pruned model (not packed)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from nas_mtl.serving.predict import predict_run

    done = predict_run(args.run_dir, args.data, args.out)
    print(f"nas-mtl: wrote {done.path}: {done.rows} rows, tasks {', '.join(done.tasks)}")
    for column, n in done.unknown_categories.items():
        print(
            f"nas-mtl: warning: {n} rows of '{column}' hold categories training never saw "
            f"(encoded as all zeros)",
            file=sys.stderr,
        )
    return 0


def _target_open(run_dir: Path) -> float | None:
    """The run's study's target_open, for the curves; None when the study is not readable."""
    from nas_mtl.rundir import study_of_run

    try:
        study, _ = study_of_run(run_dir)
    except (NasMtlError, OSError):
        return None
    return study.search.target_open


COMMANDS = {
    "spaces": _spaces,
    "run": _run,
    "describe": _describe,
    "search": _search,
    "derive": _derive,
    "retrain": _retrain,
    "report": _report,
    "cluster": _cluster,
    "plot": _plot,
    "tune": _tune,
    "export": _export,
    "predict": _predict,
}

if __name__ == "__main__":
    sys.exit(main())
