"""``panel2patch ablation``: compare evaluated runs with a baseline run (paired bootstrap per metric).

    panel2patch ablation --baseline multi_granular \\
        --arm multi_granular=results/evaluate/ablation-multi_granular-s0/evaluation.json \\
        --arm figure_only=results/evaluate/ablation-figure_only-s0/evaluation.json --out /tmp/ablation

An arm is NAME=EVALUATION.json[,EVALUATION.json...] (one evaluation per training seed, written by
``panel2patch evaluate`` or the workflow's evaluate rule, on the same data in every arm).  Writes
OUT/ablation.json, OUT/ablation.md (also printed on stdout) and OUT/ablation.html (the table with
a bar chart of the differences); see panel2patch.evaluate.ablation for the statistics.

Exit status: 0 the table is written, 2 a missing file, an arm given twice, a baseline that is not
an arm, or evaluations on different data.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _arm(value: str) -> tuple[str, list[str]]:
    name, sep, paths = value.partition("=")
    if not sep or not name or not paths:
        raise argparse.ArgumentTypeError(f"{value!r}: expected NAME=EVALUATION.json[,EVALUATION.json...]")
    return name, [p for p in paths.split(",") if p]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from panel2patch.evaluate.ablation import DEFAULTS

    p.add_argument("--arm", type=_arm, action="append", required=True, metavar="NAME=EVAL.json[,...]",
                   help="an arm: its name and its evaluation.json file(s), one per seed (repeat for every arm)")
    p.add_argument("--baseline", required=True, help="the arm every other arm is compared with")
    p.add_argument("--out", required=True, help="output folder (ablation.json, ablation.md, ablation.html)")
    p.add_argument("--resamples", type=int, default=DEFAULTS["resamples"],
                   help=f"bootstrap resamples of the test items (default {DEFAULTS['resamples']})")
    p.add_argument("--ci", type=float, default=DEFAULTS["ci"], help=f"confidence level (default {DEFAULTS['ci']})")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of the bootstrap (default 0)")
    p.add_argument("--column", default=None, help="the evaluated model's column (default: each evaluation's first model)")
    p.add_argument("--mlflow", action="store_true", help="log an MLflow run (store: --results-dir/mlflow)")
    p.add_argument("--results-dir", default="results", help="folder whose mlflow/ holds the store (default results)")
    p.add_argument("--name", default=None, help="MLflow run name (default: the output folder's name)")


def main(args: argparse.Namespace) -> int:
    from panel2patch.cli import EXIT_OK, UsageError, quiet, summary
    from panel2patch.evaluate.ablation import compare, log_to_mlflow

    arms: dict[str, list[str]] = {}
    for name, paths in args.arm:
        if name in arms:
            raise UsageError(f"--arm {name} given twice (list its seeds' evaluations after one =, comma-separated)")
        for path in paths:
            if not Path(path).is_file():
                raise UsageError(f"--arm {name}: {path}: no such file")
        arms[name] = paths
    if args.resamples < 1 or not 0 < args.ci < 1:
        raise UsageError("--resamples must be >= 1 and --ci between 0 and 1")
    try:
        result = compare(arms, args.baseline, args.out, column=args.column, resamples=args.resamples, ci=args.ci,
                         seed=args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.mlflow:
        run_id = log_to_mlflow(result, args.out, args.name or Path(args.out).name, args.results_dir)
        summary(f"ablation: MLflow run {run_id}")
    if not quiet():
        print((Path(args.out) / "ablation.md").read_text())
    n_sig = sum(m["excludes_zero"] for m in result["metrics"])
    summary(f"ablation: {len(result['metrics'])} comparisons ({n_sig} with an interval excluding 0), "
            f"{len(result['skipped'])} not compared -> {Path(args.out) / 'ablation.json'}")
    return EXIT_OK
