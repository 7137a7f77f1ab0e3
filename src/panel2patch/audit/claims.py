"""The papers' claims (``config/claims/*.yaml``) next to the run's metrics.

A claims file names its paper, arXiv id and source, the paper's ``setup`` (model, training
pairs) and a ``tolerance`` (points), then its claims:

- ``kind: value``: a reported number on the paper's ``benchmark``. Compared only with a trained
  run that is comparable: same model, training pairs within a factor of 2 of the paper's, and an
  evaluation set of the run named as the paper's benchmark; then ``pass`` when the run's value
  (x100) is within ``tolerance`` of ``reported``, else ``fail``. Otherwise the row is
  ``not comparable`` with every reason, and the run's closest row (``ours``) is shown, never passed.
- ``kind: direction``: ``better`` beats ``worse`` on the ``ours`` metric, read from the ablation
  results (``results/ablation/ablation.json``); ``not comparable: no ablation run`` without them.

The ablation reader is tolerant of the table's shape: a list of evaluation rows whose ``values``
are keyed by variant or run name; or per variant/run (under ``variants``, ``runs`` or ``results``,
a mapping or a list of entries with ``name``/``variant``/``run``) an evaluation result (``rows``)
or a flat ``metrics`` mapping keyed like the MLflow metrics (``retrieval/corpus-test/panel/i2t_r1``,
optionally ending in ``/model``).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from panel2patch.evaluate.run import metric_key

from .lineage import FAIL, NOT_COMPARABLE, PASS, row

ABLATION = "ablation/ablation.json"  # under the results folder
DATA_FACTOR = 2.0  # training pairs within this factor of the paper's count as the same data size


def load_claims(folder: str | Path) -> list[dict]:
    """Every claim of ``folder/*.yaml``, each with its file's paper, arxiv, source, setup, tolerance."""
    claims = []
    for path in sorted(Path(folder).glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        for key in ("paper", "arxiv", "source", "claims"):
            if key not in doc:
                raise ValueError(f"{path}: no '{key}'")
        for c in doc["claims"]:
            if c.get("kind") not in ("value", "direction"):
                raise ValueError(f"{path}: claim {c.get('id')}: kind must be value or direction, not {c.get('kind')!r}")
            claims.append({**c, "paper": doc["paper"], "arxiv": doc["arxiv"], "source": doc["source"],
                           "setup": doc.get("setup") or {}, "tolerance": float(doc.get("tolerance", 2.0)),
                           "file": path.name})
    return claims


def run_profile(results: Path, name: str) -> dict:
    """A trained run as the claims see it: model, training pairs, evaluation rows."""
    train = results / "train" / name
    cfg = yaml.safe_load((train / "run_config.yaml").read_text()) if (train / "run_config.yaml").is_file() else {}
    manifest = train / "final" / "data_manifest.json"
    pairs = None
    if manifest.is_file():
        shards = json.loads(manifest.read_text()).get("shards", {})
        pairs = sum(s.get("pairs", 0) for tar, s in shards.items() if tar.startswith("train"))
    ev = results / "evaluate" / name / "evaluation.json"
    rows = json.loads(ev.read_text())["rows"] if ev.is_file() else []
    return {"name": name, "model": cfg.get("model"), "training_pairs": pairs, "rows": rows}


def _find(rows: list[dict], want: dict, column: str = "model") -> float | None:
    for r in rows:
        if (r.get("benchmark"), r.get("data"), r.get("metric")) == (want["benchmark"], want["data"], want["metric"]):
            v = r.get("values", {}).get(column)
            return float(v) if isinstance(v, (int, float)) else None
    return None


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def compare_value(claim: dict, run: dict) -> dict:
    setup, subject = claim["setup"], f"{claim['id']} ({run['name']})"
    head = f"{claim['table']}: {claim['metric']} reported {claim['reported']}"
    reasons = []
    if not setup.get("model"):
        reasons.append(f"model: the paper's is not stated (run: {run['model']})")
    elif run["model"] != setup["model"]:
        reasons.append(f"model {run['model']} vs {setup['model']}")
    paper_pairs = setup.get("training_pairs")
    if not paper_pairs:
        reasons.append(f"data size: the paper's is not stated (run: {run['training_pairs']} training pairs)")
    elif not run["training_pairs"] or not (1 / DATA_FACTOR <= run["training_pairs"] / paper_pairs <= DATA_FACTOR):
        reasons.append(f"data size {run['training_pairs']} training pairs vs ~{paper_pairs:,}")
    theirs = {**claim.get("ours", {}), "data": claim["benchmark"]}
    value = _find(run["rows"], theirs) if claim.get("ours") else None
    if value is None:
        reasons.append(f"benchmark: the run has no '{claim['benchmark']}' evaluation")
    if reasons:
        ours = claim.get("ours")
        shown = f" (ours on {ours['data']}: {_pct(_find(run['rows'], ours))}, not the same test)" if ours else ""
        return row("claims", subject, NOT_COMPARABLE, f"{head}{shown}; not comparable: {'; '.join(reasons)}", "claims")
    ok = abs(100 * value - claim["reported"]) <= claim["tolerance"]
    return row("claims", subject, PASS if ok else FAIL,
               f"{head}, run {_pct(value)} (tolerance {claim['tolerance']:g})", "claims")


def _entries(ablation) -> dict[str, dict]:
    """name -> entry of the ablation results, whatever container holds them."""
    for key in ("variants", "runs", "results"):
        got = ablation.get(key) if isinstance(ablation, dict) else None
        if isinstance(got, dict):
            return {str(k): v for k, v in got.items() if isinstance(v, dict)}
        if isinstance(got, list):
            return {str(e.get("name") or e.get("variant") or e.get("run")): e for e in got if isinstance(e, dict)}
    return {}


def ablation_value(ablation, names: list[str], metric: dict) -> float | None:
    """The metric of the first of ``names`` (variant, then run name) found in the ablation results."""
    rows = ablation.get("rows") if isinstance(ablation, dict) else None
    if isinstance(rows, list):
        for name in names:
            if (v := _find(rows, metric, name)) is not None:
                return v
    entries = _entries(ablation)
    key = metric_key(metric, "model").rsplit("/", 1)[0]
    for name in names:
        entry = entries.get(name)
        if entry is None:
            continue
        if isinstance(entry.get("rows"), list) and (v := _find(entry["rows"], metric)) is not None:
            return v
        for flat in (entry.get("metrics"), entry):
            if isinstance(flat, dict):
                for k in (key, f"{key}/model"):
                    if isinstance(flat.get(k), (int, float)):
                        return float(flat[k])
    return None


def compare_direction(claim: dict, ablation, ablation_path: Path) -> dict:
    head = f"{claim['statement']} ({claim['table']})"
    if ablation is None:
        return row("claims", claim["id"], NOT_COMPARABLE, f"{head}; not comparable: no ablation run "
                   f"({ablation_path.name} absent)", "claims")
    runs = claim.get("runs", {})
    metric = claim["ours"]
    better = ablation_value(ablation, [claim["better"], runs.get(claim["better"], "")], metric)
    worse = ablation_value(ablation, [claim["worse"], runs.get(claim["worse"], "")], metric)
    missing = [n for n, v in ((claim["better"], better), (claim["worse"], worse)) if v is None]
    if missing:
        return row("claims", claim["id"], NOT_COMPARABLE, f"{head}; not comparable: the ablation results have no "
                   f"{metric['data']} {metric['metric']} for {', '.join(missing)}", "claims")
    return row("claims", claim["id"], PASS if better > worse else FAIL,
               f"{head}: {metric['data']} {metric['metric']} {claim['better']} {_pct(better)} vs "
               f"{claim['worse']} {_pct(worse)}", "claims")


def check_claims(claims: list[dict], results: Path, runs: list[str]) -> list[dict]:
    """One row per value claim and trained run, one per direction claim."""
    ablation_path = results / ABLATION
    ablation = json.loads(ablation_path.read_text()) if ablation_path.is_file() else None
    profiles = [run_profile(results, name) for name in runs]
    rows = []
    for c in claims:
        if c["kind"] == "direction":
            got = [compare_direction(c, ablation, ablation_path)]
        else:
            got = [compare_value(c, p) for p in profiles] or \
                [row("claims", c["id"], NOT_COMPARABLE, "not comparable: no trained run", "claims")]
        source = f"{c['paper']}, arXiv {c['arxiv']}, {c['table']}; {c['source']}"
        rows += [{**r, "source": source} for r in got]
    return rows
