"""``panel2patch evaluate``: benchmark open_clip models, each next to its untrained baseline.

    panel2patch evaluate results/train/tiny/final --corpus results/corpus/shards \\
        --vqa-rad resources/vqa-rad --out /tmp/eval
    panel2patch evaluate results/train/tiny/final ViT-B-16@/models/biomedclip.pt --benchmarks zeroshot,probe \\
        --vqa-rad ../shared/data/vqa-rad --dataset /data/pathmnist.npz --out /tmp/side_by_side

MODEL: an open_clip model folder (our results/train/<run>/final, or any folder with
open_clip_config.json; also local-dir:PATH), ARCH@CHECKPOINT (an open_clip architecture name and
a weights file) or hf-hub:ORG/REPO.  Benchmarks: retrieval, zeroshot, probe, vqa, grounding,
perturbed (default: all; see panel2patch.evaluate.run).  Writes OUT/evaluation.json and
OUT/evaluation.md (the table, also printed on stdout) and, with --mlflow, an MLflow run.

Exit status: 0 every benchmark ran (those without usable data are listed as not run, with the
reason), 1 a benchmark's data could not be read (the others are written), 2 a model, dataset or
folder that is missing, or an unknown benchmark.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    from panel2patch.evaluate.run import BENCHMARKS, DEFAULTS

    p.add_argument("models", nargs="+", metavar="MODEL", help="model folder, local-dir:PATH, ARCH@CHECKPOINT or hf-hub:ID")
    p.add_argument("--out", required=True, help="output folder (evaluation.json, evaluation.md, the untrained model)")
    p.add_argument("--benchmarks", type=_csv, default=list(BENCHMARKS),
                   help=f"comma-separated, from {','.join(BENCHMARKS)} (default: all)")
    p.add_argument("--corpus", help="corpus shard folder (results/corpus/shards) for retrieval, grounding, perturbed")
    p.add_argument("--split", default=DEFAULTS["split"], help="corpus split to evaluate on (default: test)")
    p.add_argument("--vqa-rad", help="VQA-RAD folder (trainset.json, testset.json, images/), e.g. resources/vqa-rad")
    p.add_argument("--dataset", action="append", default=[], metavar="PATH",
                   help="a classification set: image folder, CSV (image,label[,split]) or MedMNIST .npz (repeatable)")
    p.add_argument("--pairs", action="append", default=[], metavar="PATH",
                   help="image-text pairs: WebDataset .tar or folder of them, CSV/JSONL with image,text (repeatable)")
    p.add_argument("--perturb-k", type=int, default=DEFAULTS["perturb_k"], help="perturbations per text (default 3)")
    p.add_argument("--grounding-candidates", type=int, default=DEFAULTS["grounding_candidates"],
                   help="regions per phrase in the pointing game (default 8)")
    p.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="seed of probes, heads, perturbations, baseline")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images or texts encoded at once (default 64)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--mlflow", action="store_true", help="log an MLflow run (store: --results-dir/mlflow)")
    p.add_argument("--results-dir", default="results", help="folder whose mlflow/ holds the store (default results)")
    p.add_argument("--name", default=None, help="MLflow run name (default: the output folder's name)")


def main(args: argparse.Namespace) -> int:
    from panel2patch.cli import EXIT_FAILED, EXIT_OK, UsageError, progress, quiet, summary
    from panel2patch.evaluate import models as M
    from panel2patch.evaluate.run import BENCHMARKS, evaluate, log_to_mlflow

    bad = [b for b in args.benchmarks if b not in BENCHMARKS]
    if bad or not args.benchmarks:
        raise UsageError(f"unknown benchmark(s) {', '.join(bad) or '(none given)'}: choose from {', '.join(BENCHMARKS)}")
    for spec in args.models:
        try:
            M.parse_spec(spec)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
    for flag, paths in (("--corpus", [args.corpus] if args.corpus else []), ("--vqa-rad", [args.vqa_rad] if args.vqa_rad else []),
                        ("--dataset", args.dataset), ("--pairs", args.pairs)):
        for p in paths:
            if not Path(p).exists():
                raise UsageError(f"{flag} {p}: no such file or folder")
    if args.corpus and not any(Path(args.corpus).glob("*.tar")):
        raise UsageError(f"--corpus {args.corpus}: no WebDataset shards (*.tar) in it")
    if args.perturb_k < 1 or args.grounding_candidates < 2:
        raise UsageError("--perturb-k must be >= 1 and --grounding-candidates >= 2")

    result = evaluate(args.models, args.out, args.corpus, progress=progress, benchmarks=args.benchmarks,
                      split=args.split, vqa_rad=args.vqa_rad, datasets=args.dataset, pairs=args.pairs,
                      perturb_k=args.perturb_k, grounding_candidates=args.grounding_candidates, seed=args.seed,
                      batch_size=args.batch_size, threads=args.threads)
    if args.mlflow:
        run_id = log_to_mlflow(result, args.out, args.name or Path(args.out).name, args.results_dir)
        summary(f"evaluate: MLflow run {run_id}")
    if not quiet():
        print((Path(args.out) / "evaluation.md").read_text())
    for f in result["failed"]:
        print(f"panel2patch evaluate: error: {f['benchmark']}: {f['error']}", file=sys.stderr)
    summary(f"evaluate: {len(result['rows'])} rows, {len(result['skipped'])} not run, {len(result['failed'])} failed "
            f"-> {Path(args.out) / 'evaluation.json'}")
    return EXIT_FAILED if result["failed"] else EXIT_OK
