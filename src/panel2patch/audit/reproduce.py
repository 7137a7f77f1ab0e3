"""Reproduction: rerun the chosen data stages from the recorded inputs and config in a scratch
folder and compare the outputs' sha256 with the recorded ones (bit-identical expected).

Stages (``STAGES``, by their recorded stage name; ``data`` = all of them; ``align_panels``, the
rule's name, is accepted for ``align``):

==============  ==============  ====================================================
stage           rule            outputs compared (each run's ``outputs.json``)
==============  ==============  ====================================================
ingest          ingest          per shard: figures, articles, skips, images
ingest_summary  ingest_summary  summary.json, skips.tsv
text            text            per shard: subcaptions, markers
layout          layout          per shard: panels, skips, crops
markers         markers         per shard: markers, patches, skips, crops
align           align_panels    per shard: panel_text
corpus_pairs    corpus_pairs    per shard: pairs
corpus          corpus          pairs, manifest, sizes.json (the tar shards: lineage)
==============  ==============  ====================================================

How: the scratch folder gets a copy of the workflow's checkout (the folder holding the results
folder: its git-tracked and not-ignored files, or every file but results/ and hidden folders
where it is not a git checkout), the top folders of the recorded relative inputs linked in (read
where they lie), trained models under results/ that the data stages read copied in, and the parent
run's recorded ``config.json`` as ``config/config.yaml`` (tracking into the scratch folder's own
store, so the audited store is never written). The real workflow then runs there
(``snakemake <the recorded outputs of the chosen stages>``, their upstream stages with them), and
every recorded output of every chosen stage run is re-hashed at the same relative path: one row
per stage run (``layout:shard-00000``), pass when all are bit-identical (with the rerun's time,
from its run in the scratch store), else fail naming each file with both hashes. The rerun uses
the checkout's code: when its git commit differs from the one a stage run recorded, the row says
so and keeps its status (a failure may then be a code change, not a broken record). Inputs given
as ``../`` paths are not linked.

``train`` (not in ``data``): each recorded train run rerun the same way (its
``results/train/<run>/result.json`` built); its final ``val/`` and ``test/`` metrics must be within
``tolerance`` (absolute, config ``audit.tolerance``) of the ones its MLflow run recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from panel2patch.digest import sha256_path

from .lineage import FAIL, PASS, row
from .records import AuditError, Record, open_record

STAGES = ("ingest", "ingest_summary", "text", "layout", "markers", "align", "corpus_pairs", "corpus")
ALIASES = {"align_panels": ["align"], "data": list(STAGES)}
CHOICES = (*STAGES, "train", *ALIASES)
TOLERANCE = 0.05  # train: |rerun - recorded| allowed per final val/ and test/ metric (config audit.tolerance)
TIMEOUT_S = 3 * 3600


def stage_names(chosen: list[str]) -> list[str]:
    """The stages ``chosen`` names (``data`` = all), in the DAG's order; ValueError for an unknown one."""
    unknown = [s for s in chosen if s not in CHOICES]
    if unknown:
        raise ValueError(f"cannot reproduce stage(s) {', '.join(unknown)}: reproducible stages are "
                         f"{', '.join(CHOICES)} (data = all data stages)")
    names = {n for s in chosen for n in ALIASES.get(s, [s])}
    return [s for s in (*STAGES, "train") if s in names]


def _git_head(folder: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _checkout_files(root: Path) -> list[str]:
    """The checkout's files relative to ``root``: git-tracked and not ignored, else all but
    results/ and hidden folders."""
    try:
        proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=root,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode == 0 and (root / ".git").exists():
            return [f for f in proc.stdout.split("\0") if f]
    except (OSError, subprocess.SubprocessError):
        pass
    files = []
    for folder, dirs, names in os.walk(root):
        rel = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (rel == Path(".") and d == "results")]
        files += [str(rel / n) for n in names]
    return files


def _model_paths(config: dict) -> list[str]:
    """Files under results/ made by the run's training rules that the data stages read."""
    layout, detect = config.get("layout") or {}, (config.get("markers") or {}).get("detect") or {}
    paths = []
    if layout.get("method", "splitter") != "splitter":
        paths.append(layout.get("detector_weights") or "results/models/panel_detector.pt")
    if detect.get("method", "heuristic") != "heuristic":
        paths += [detect.get("weights"), detect.get("verifier")]
    return [p for p in paths if p and not Path(p).is_absolute() and Path(p).parts[0] == "results"]


def prepare(rec: Record, scratch: Path, config: dict) -> None:
    """The workflow's checkout in ``scratch``, its inputs linked in, the recorded config as config/config.yaml."""
    tops = {Path(p).parts[0] for p in config.get("inputs") or [] if not Path(p).is_absolute() and Path(p).parts[0] != ".."}
    for rel in _checkout_files(rec.root):
        src = rec.root / rel
        if Path(rel).parts[0] in tops | {"results"} or not src.is_file():
            continue
        (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, scratch / rel)
    for top in tops:
        if not (scratch / top).exists() and (rec.root / top).exists():
            (scratch / top).symlink_to((rec.root / top).resolve())
    for p in _model_paths(config):
        if rec.path(p).is_file():
            (scratch / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(rec.path(p), scratch / p)
    tracking = {**(config.get("tracking") or {}), "uri": None, "server": "none", "artifact_location": None}
    (scratch / "config").mkdir(exist_ok=True)
    (scratch / "config" / "config.yaml").write_text(json.dumps({**config, "tracking": tracking}, indent=1) + "\n")


def run_workflow(scratch: Path, targets: list[str], cores: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "P2P_MLFLOW_PARENT")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch / "src"), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cores = cores or max(1, min(len(os.sched_getaffinity(0)), 8))
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), *targets],
                          cwd=scratch, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


def _seconds(run) -> float | None:
    return (run.info.end_time - run.info.start_time) / 1000 if run and run.info.end_time else None


def compare_train(rec: Record, again: Record | None, tolerance: float) -> list[dict]:
    """One row per recorded train run: its final val/ and test/ metrics against the rerun's."""
    rows = []
    for name, run in sorted(rec.stage("train").items()):
        rerun = again and again.latest(f"train:{name}")
        if rerun is None:
            rows.append(row("train", name, FAIL, "no finished rerun of train:" + name, "reproduction"))
            continue
        keys = sorted(k for k in run.data.metrics if k.startswith(("val/", "test/")))
        new = rerun.data.metrics
        bad = [f"{k} recorded {run.data.metrics[k]:.4f}, rerun {new[k]:.4f}" if k in new else f"{k} missing in the rerun"
               for k in keys if k not in new or abs(new[k] - run.data.metrics[k]) > tolerance]
        if bad or not keys:
            rows.append(row("train", name, FAIL, "; ".join(bad) or "the run recorded no val/ or test/ metrics",
                            "reproduction"))
        else:
            worst = max(abs(new[k] - run.data.metrics[k]) for k in keys)
            rows.append(row("train", name, PASS, f"{len(keys)} final metrics within {tolerance} on rerun (largest "
                            f"difference {worst:.4f})", "reproduction"))
    return rows


def compare(rec: Record, scratch: Path, stages: list[str], head: str | None, tolerance: float = TOLERANCE) -> list[dict]:
    """One row per recorded run of ``stages``: its outputs re-hashed in ``scratch``."""
    try:
        again = open_record(scratch / "results")
    except Exception:  # noqa: BLE001 - no scratch record: no timings
        again = None
    rows = []
    for stage in stages:
        if stage == "train":
            rows += compare_train(rec, again, tolerance)
            continue
        runs = rec.stage(stage)
        if not runs:
            rows.append(row(stage, "runs", FAIL, f"no finished {stage} run recorded", "reproduction"))
        for name, run in sorted(runs.items()):
            outputs = rec.artifact_json(run.info.run_id, "outputs.json")
            if not outputs:
                rows.append(row(stage, name, FAIL, f"{stage}:{name} recorded no outputs.json", "reproduction"))
                continue
            bad = []
            for key, o in sorted(outputs.items()):
                if Path(o["path"]).is_absolute():
                    bad.append(f"{key}: absolute path {o['path']} not reproduced in scratch")
                    continue
                path = scratch / o["path"]
                got = sha256_path(path) if path.exists() else None
                if got != o["sha256"]:
                    bad.append(f"{o['path']}: sha256 recorded {o['sha256'][:12]}, rerun {got[:12] if got else 'missing'}")
            recorded = run.data.tags.get("mlflow.source.git.commit")
            note = (f" (the rerun used the checkout's code, {f'commit {head[:12]}' if head else 'not a git checkout'}; "
                    f"the run recorded commit {recorded[:12]})") if recorded and head != recorded else ""
            if bad:
                rows.append(row(stage, name, FAIL, "; ".join(bad) + note, "reproduction"))
            else:
                took = _seconds(again and again.latest(f"{stage}:{name}"))
                timing = f" ({took:.1f} s)" if took is not None else ""
                rows.append(row(stage, name, PASS, f"{len(outputs)} outputs bit-identical on rerun{timing}{note}",
                                "reproduction"))
    return rows


def reproduce(rec: Record, stages: list[str], scratch: str | Path | None = None, keep: bool = False,
              tolerance: float = TOLERANCE) -> list[dict]:
    """Rerun ``stages`` (of :data:`CHOICES`) with the workflow in ``scratch`` (default a temporary
    folder, removed after unless ``keep``; a folder given must be empty or new, and is left as it
    is after) and compare."""
    stages = stage_names(stages)
    if not stages:
        return []
    config = rec.config()
    if config is None:
        return [row(stages[0], "config.json", FAIL, "the parent run recorded no config.json", "reproduction")]
    if scratch and Path(scratch).exists() and any(Path(scratch).iterdir()):  # old outputs would count as reruns
        raise AuditError(f"--scratch {scratch}: not empty (the rerun needs an empty or new folder)")
    folder = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="p2p-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        prepare(rec, folder, config)
        targets = sorted({o["path"] for s in stages for run in rec.stage(s).values()
                          for o in (rec.artifact_json(run.info.run_id, "outputs.json") or {}).values()
                          if not Path(o["path"]).is_absolute()})
        if "train" in stages:
            targets += [f"results/train/{name}/result.json" for name in sorted(rec.stage("train"))]
        proc = run_workflow(folder, targets)
        rows = compare(rec, folder, stages, _git_head(rec.root), tolerance)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-6:])[-800:]
            rows.insert(0, row("workflow", "snakemake", FAIL, f"the rerun in {folder} failed (exit {proc.returncode}): "
                               f"{tail}", "reproduction"))
        return rows
    finally:
        if not keep and not scratch:
            shutil.rmtree(folder, ignore_errors=True)
