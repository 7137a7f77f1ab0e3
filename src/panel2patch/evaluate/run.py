"""The evaluation stage: models x benchmarks -> ``evaluation.json`` + ``evaluation.md``, with the
untrained baseline and the trivial references in every row, and an MLflow run.

    result = evaluate(["results/train/tiny/final"], "results/evaluate/tiny", corpus="results/corpus/shards")

Benchmarks (``BENCHMARKS``; data each one reads):

=============  ==========================================================================
retrieval      R@1/5/10 i->t and t->i per level: corpus ``split`` pairs + user pair sets
zeroshot       VQA-RAD organ and modality (+ user classification sets), prompt templates
probe          logistic regression on frozen image features, same sets, their train/test
vqa            VQA-RAD closed yes/no questions, small head on image + question features
grounding      pointing game over each patch phrase's panel regions: corpus + user pairs
perturbed      pick the original text among K perturbations: corpus + user pairs
=============  ==========================================================================

Every model named is evaluated, and next to each its untrained baseline
(:func:`panel2patch.evaluate.models.untrained`); a benchmark whose data is absent or unusable
is listed under ``skipped`` with the reason (never a row without its baseline), and one whose
data cannot be read is listed under ``failed`` (exit status 1 from the CLI).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from panel2patch.evaluate.common import Outcome

log = logging.getLogger(__name__)

BENCHMARKS = ("retrieval", "zeroshot", "probe", "vqa", "grounding", "perturbed")
# what `benchmarks` means when not given, and each knob's default (also the config schema's)
DEFAULTS = {
    "benchmarks": list(BENCHMARKS),
    "split": "test",  # corpus split the pair benchmarks read
    "vqa_rad": None,  # VQA-RAD folder (trainset.json, testset.json, images/); None: those sets are skipped
    "datasets": [],  # more classification sets: image folders, CSV, MedMNIST .npz
    "pairs": [],  # more image-text pair sets: WebDataset tars, CSV/JSONL
    "perturb_k": 3,  # perturbations per text in the perturbed-report test (chance 1/(K+1))
    "grounding_candidates": 8,  # regions per phrase in the pointing game (the true patch + distractors)
    "seed": 0,  # probe, VQA head and perturbations; the untrained baseline takes the run config's seed
    "batch_size": 64,
    "threads": None,  # torch threads (None: torch's default)
}


def _pairsets(corpus, split, pairs):
    from panel2patch.evaluate.datasets import corpus_pairs, read_pairs

    sets = [corpus_pairs(corpus, split)] if corpus else []
    return sets + [read_pairs(p) for p in pairs]


def _classsets(vqa_rad, datasets):
    from panel2patch.evaluate.datasets import read_classification, vqa_rad_modality, vqa_rad_organ

    sets = [vqa_rad_organ(vqa_rad), vqa_rad_modality(vqa_rad)] if vqa_rad else []
    return sets + [read_classification(p) for p in datasets]


def evaluate(specs: list[str], out_dir: str | Path, corpus: str | Path | None = None, *, progress=None,
             **options) -> dict:
    """Run the benchmarks on every model spec and its untrained baseline; write the outputs."""
    from panel2patch.evaluate import classify, grounding, models as M, perturbed, retrieval, vqa
    from panel2patch.evaluate.datasets import vqa_rad_yesno

    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown evaluation options {sorted(unknown)}")
    benchmarks = list(dict.fromkeys(opts["benchmarks"]))
    bad = [b for b in benchmarks if b not in BENCHMARKS]
    if bad or not benchmarks:
        raise ValueError(f"benchmarks {bad or benchmarks}: expected some of {', '.join(BENCHMARKS)}")
    if opts["threads"]:
        import torch

        torch.set_num_threads(int(opts["threads"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = progress or (lambda it, **kw: it)

    t0 = time.perf_counter()
    models = []
    several = len(specs) > 1
    for i, spec in enumerate(specs):
        label = Path(spec.split("@")[-1]).name if several else "model"
        models.append(M.load(spec, label=label))
        base_dir = out_dir / ("untrained" if not several else f"untrained-{i}")
        models.append(M.untrained(spec, base_dir, seed=opts["seed"], label="untrained" if not several else f"untrained ({label})"))
    load_s = time.perf_counter() - t0

    out, failed, seconds = Outcome(), [], {"load models": round(load_s, 2)}
    bs, seed = opts["batch_size"], opts["seed"]
    data_cache: dict = {}

    def data(kind):  # read once, shared by the benchmarks that use it
        if kind not in data_cache:
            if kind == "pairs":
                data_cache[kind] = _pairsets(corpus, opts["split"], opts["pairs"])
            elif kind == "classes":
                data_cache[kind] = _classsets(opts["vqa_rad"], opts["datasets"])
            else:
                data_cache[kind] = [vqa_rad_yesno(opts["vqa_rad"])] if opts["vqa_rad"] else []
        return data_cache[kind]

    for bench in progress(benchmarks, desc="benchmarks", unit="benchmark"):
        t = time.perf_counter()
        try:
            if bench == "retrieval":
                res = retrieval.run(models, data("pairs"), bs)
            elif bench in ("zeroshot", "probe"):
                res = classify.run(models, data("classes"), {bench}, seed, bs)
            elif bench == "vqa":
                res = vqa.run(models, data("vqa"), seed, bs)
            elif bench == "grounding":
                res = grounding.run(models, data("pairs"), opts["grounding_candidates"], bs)
            else:
                res = perturbed.run(models, data("pairs"), opts["perturb_k"], seed, bs)
            if bench in ("retrieval", "grounding", "perturbed") and not data("pairs"):
                res.skip(bench, "-", "no pair data (no corpus and no --pairs)")
            if bench in ("zeroshot", "probe", "vqa") and not data("classes" if bench != "vqa" else "vqa"):
                res.skip(bench, "-", "no classification data (no VQA-RAD folder and no --dataset)")
        except (OSError, ValueError, KeyError) as exc:  # data that cannot be read: this benchmark fails
            log.error("%s: %s", bench, exc)
            failed.append({"benchmark": bench, "error": f"{type(exc).__name__}: {exc}"})
            data_cache.clear()
            res = Outcome()
        out.extend(res)
        seconds[bench] = round(time.perf_counter() - t, 2)
        log.info("%s: %d rows in %.1f s", bench, len(res.rows), seconds[bench])

    columns = [m.label for m in models] + [c for c in ("chance", "majority", "text-only", "pixels")
                                           if any(c in r["values"] for r in out.rows)]
    result = {
        "models": [{"label": m.label, "spec": m.spec, "digest": m.digest, "init": m.init, **m.info} for m in models],
        "benchmarks": benchmarks, "columns": columns, "rows": out.rows, "skipped": out.skipped, "failed": failed,
        "data": out.data, "seconds": seconds, "options": {**opts, "corpus": str(corpus) if corpus else None},
    }
    (out_dir / "evaluation.json").write_text(json.dumps(result, indent=1))
    (out_dir / "evaluation.md").write_text(markdown(result))
    return result


def _fmt(v) -> str:
    return "" if v is None else f"{v:.3f}"


def markdown(result: dict, title: str | None = None) -> str:
    """The table: one row per (benchmark, data, metric), one column per model and reference."""
    cols = result["columns"]
    lines = [f"## {title or 'Evaluation'}", ""]
    for m in result["models"]:
        lines.append(f"- **{m['label']}**: `{m['spec']}` ({m['init']}; weights sha256 `{m['digest'][:16]}`)")
    lines += ["", "| benchmark | data | metric | n | " + " | ".join(cols) + " |",
              "|---|---|---|---:|" + "---:|" * len(cols)]
    for r in result["rows"]:
        lines.append(f"| {r['benchmark']} | {r['data']} | {r['metric']} | {r['n']} | "
                     + " | ".join(_fmt(r["values"].get(c)) for c in cols) + " |")
    if result["skipped"]:
        lines += ["", "Not run:"] + [f"- {s['benchmark']} on {s['data']}: {s['reason']}" for s in result["skipped"]]
    if result["failed"]:
        lines += ["", "Failed:"] + [f"- {f['benchmark']}: {f['error']}" for f in result["failed"]]
    lines += ["", "Seconds: " + ", ".join(f"{k} {v:g}" for k, v in result["seconds"].items()),
              "", "Data sha256: " + ", ".join(f"{k} `{v['sha256'][:16]}`" for k, v in sorted(result["data"].items())), ""]
    return "\n".join(lines)


def metric_key(row: dict, column: str) -> str:
    """An MLflow metric name: ``<benchmark>/<data>/<metric>/<column>`` in MLflow's alphabet, e.g.
    ``retrieval/corpus-test/panel/i2t_r1/untrained``, ``zeroshot/vqa-rad-organ/balanced_acc/model``."""
    import re

    metric = row["metric"].replace(" R@", "_r").replace(" ", "_")  # "i2t R@1" -> "i2t_r1"
    raw = f"{row['benchmark']}/{row['data']}/{metric}/{column.replace(' ', '_')}"
    return re.sub(r"[^A-Za-z0-9_\-./]", "_", raw)


def log_to_mlflow(result: dict, out_dir: str | Path, name: str, results_dir: str | Path,
                  tracking_cfg: dict | None = None) -> str:
    """A nested ``evaluate:<name>`` run (under the workflow's parent when there is one): every
    metric of every column, the models' digests and every benchmark data's sha256 as tags, the
    data table as the run's dataset input, and the JSON + markdown as artifacts."""
    import mlflow
    import pandas as pd

    from panel2patch.tracking import stage_run

    out_dir = Path(out_dir)
    params = {"benchmarks": result["benchmarks"], **{k: v for k, v in result["options"].items() if k != "benchmarks"},
              "models": [m["spec"] for m in result["models"]]}
    with stage_run("evaluate", name, params, results_dir, tracking_cfg) as run:
        metrics = {}
        for r in result["rows"]:
            for col, v in r["values"].items():
                metrics[metric_key(r, col)] = v
        run.log_metrics(metrics)
        run.log_metrics({f"seconds/{k}": v for k, v in result["seconds"].items()})
        for m in result["models"]:
            mlflow.set_tag(f"model.{m['label']}.digest", m["digest"])
            mlflow.set_tag(f"model.{m['label']}.spec", m["spec"][:5000])
        for dname, d in result["data"].items():
            mlflow.set_tag(f"data.{dname}.sha256", d["sha256"])
        if result["data"]:
            run.log_manifest(pd.DataFrame([{"name": k, **v} for k, v in sorted(result["data"].items())]),
                             name="evaluation-data", context="evaluation")
        mlflow.log_dict(result, "evaluation.json")
        mlflow.log_artifact(str(out_dir / "evaluation.md"))
        run.log_outputs({"evaluation": out_dir / "evaluation.json", "table": out_dir / "evaluation.md"})
        return run.run_id
