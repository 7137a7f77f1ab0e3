"""Ablation table: runs that differ in one training choice, evaluated on the same items, compared
with a paired bootstrap -> ``ablation.json`` + ``ablation.md`` + ``ablation.html``.

    result = compare({"multi_granular": ["results/evaluate/ablation-multi_granular-s0/evaluation.json"],
                      "figure_only": ["results/evaluate/ablation-figure_only-s0/evaluation.json"]},
                     baseline="multi_granular", out_dir="results/ablation")

Inputs: per arm, the ``evaluation.json`` of each seed (panel2patch.evaluate.run), whose rows hold
per-item outcomes (``row["items"]``: 1/0 hits or tie credits per test query, in the data's order;
see panel2patch.evaluate.common).  Every arm must have been evaluated on the same data (same
sha256 per data set): the items are then the same items, and each arm's outcome on item *i* can
be paired with the baseline's.

Per metric (row) and arm:

- an arm's per-item outcome is its mean over the arm's seeds (so the value is the seeds' mean);
- ``value`` and ``baseline_value`` are the metric on those outcomes (the mean, or for balanced
  accuracy the mean over classes of the per-class mean), ``diff = value - baseline_value``;
- ``ci_low``/``ci_high``: percentile interval (level ``ci``) of the difference over ``resamples``
  bootstrap resamples of the items, the same resampled items for arm and baseline (paired: the
  items' own difficulty, shared by both runs, cancels out; an unpaired interval is wider);
- ``excludes_zero``: the interval lies entirely above or below 0.

The interval covers the sampling of test items, not the variation between training seeds beyond
what averaging over ``seeds`` removes.  Metrics of a benchmark row without per-item outcomes
(an evaluation.json written before they existed) are listed under ``skipped``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np

DEFAULTS = {
    "resamples": 1000,  # bootstrap resamples of the test items (percentile CI; 1000 gives ~±0.01 on a 95% bound)
    "ci": 0.95,  # confidence level of the interval
    "seed": 0,  # the bootstrap's random generator
}
CHUNK_CELLS = 2_000_000  # resampled item indices held at once (a 100k-item test set: 20 resamples per chunk)


# ------------------------------------------------------------------------------ arms
def derive_run_config(base: str | Path, overrides: list[str] = ()) -> str:
    """An arm's run config: the base run config file with ``KEY=VALUE`` overrides (YAML values,
    dotted keys for nested ones, as ``panel2patch.train.main --set`` reads them) written into
    it, as YAML text headed by where it came from."""
    import yaml

    cfg = yaml.safe_load(Path(base).read_text()) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected KEY=VALUE")
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    head = f"# Ablation arm run config, written by the workflow: {Path(base).as_posix()}"
    head += "".join(f"\n#   --set {o}" for o in overrides) + "\n"
    return head + yaml.safe_dump(cfg, sort_keys=False)


# ------------------------------------------------------------------------------ bootstrap
def statistic(items: np.ndarray, classes: np.ndarray | None = None) -> np.ndarray:
    """The metric over the last axis of ``items`` (..., N): the mean, or with ``classes`` (N,) the
    mean over classes of each class's mean (balanced accuracy); classes absent from a resample
    are left out of its mean."""
    items = np.asarray(items, dtype=float)
    if classes is None:
        return items.mean(-1)
    classes = np.asarray(classes)
    per_class = []
    for c in np.unique(classes):
        mask = classes == c
        per_class.append(items[..., mask].mean(-1))
    return np.mean(per_class, axis=0)


def _resampled(items: np.ndarray, idx: np.ndarray, classes: np.ndarray | None) -> np.ndarray:
    """The statistic of each resample: ``idx`` (B, N) item indices -> (B,)."""
    if classes is None:
        return items[idx].mean(-1)
    classes = np.asarray(classes)
    sums, counts = [], []
    for c in np.unique(classes):
        in_c = (classes == c)[idx]  # (B, N)
        sums.append((items[idx] * in_c).sum(-1))
        counts.append(in_c.sum(-1))
    sums, counts = np.array(sums, dtype=float), np.array(counts, dtype=float)  # (C, B)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(np.where(counts > 0, sums / counts, np.nan), axis=0)


def bootstrap_diff(arm, baseline, classes=None, *, resamples: int = DEFAULTS["resamples"],
                   ci: float = DEFAULTS["ci"], seed: int = DEFAULTS["seed"], paired: bool = True) -> dict:
    """Difference ``statistic(arm) - statistic(baseline)`` of per-item outcomes (N,) on the same
    items, with its percentile bootstrap interval.  ``paired``: both resampled with the same item
    indices (the test here); ``paired=False`` resamples each independently (for comparison).

    Returns {"baseline_value", "value", "diff", "ci_low", "ci_high", "n_items", "excludes_zero"}."""
    a, b = np.asarray(arm, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"per-item outcomes of different items: {a.shape} vs {b.shape}")
    if not 0 < ci < 1:
        raise ValueError(f"ci {ci}: expected a level between 0 and 1")
    rng = np.random.default_rng(seed)
    n = len(a)
    diffs = []
    chunk = max(1, CHUNK_CELLS // n)  # resamples at once: (chunk, n) indices stay ~16 MB
    for start in range(0, resamples, chunk):
        size = (min(chunk, resamples - start), n)
        idx = rng.integers(0, n, size=size)
        idx_b = idx if paired else rng.integers(0, n, size=size)
        diffs.append(_resampled(a, idx, classes) - _resampled(b, idx_b, classes))
    diffs = np.concatenate(diffs)
    alpha = (1 - ci) / 2
    low, high = np.quantile(diffs[~np.isnan(diffs)], [alpha, 1 - alpha])
    value, base = float(statistic(a, classes)), float(statistic(b, classes))
    low, high = float(low), float(high)
    return {"baseline_value": base, "value": value, "diff": value - base, "ci_low": low, "ci_high": high,
            "n_items": n, "excludes_zero": bool(low > 0 or high < 0)}


# ------------------------------------------------------------------------------ evaluations
def metric_name(row: dict) -> str:
    """``<benchmark>/<data>/<metric>``, e.g. ``retrieval/corpus-test/panel/i2t R@1``."""
    return f"{row['benchmark']}/{row['data']}/{row['metric']}"


def _load(path) -> dict:
    return json.loads(Path(path).read_text())


def _data_digests(evaluations: list[dict]) -> dict[str, str]:
    """data set name -> sha256, the same in every evaluation (else ValueError: not the same items)."""
    digests: dict[str, str] = {}
    for ev in evaluations:
        for name, d in ev.get("data", {}).items():
            if digests.setdefault(name, d["sha256"]) != d["sha256"]:
                raise ValueError(f"data set {name} differs between the evaluations (sha256 {digests[name][:12]} "
                                 f"vs {d['sha256'][:12]}): the arms were not evaluated on the same items")
    return digests


def _arm_items(evals: list[dict], column: str | None) -> dict[str, tuple[np.ndarray, list | None]]:
    """metric name -> (per-item outcome averaged over the seeds' evaluations, item classes)."""
    out: dict[str, tuple] = {}
    per_metric: dict[str, list] = {}
    for ev in evals:
        col = column or ev["models"][0]["label"]
        for row in ev["rows"]:
            if col in row.get("items", {}):
                per_metric.setdefault(metric_name(row), []).append((row["items"][col], row.get("item_classes")))
    for name, seeds in per_metric.items():
        if len(seeds) != len(evals) or len({len(v) for v, _ in seeds}) != 1:
            continue  # not in every seed's evaluation, or on a different number of items
        out[name] = (np.mean([v for v, _ in seeds], axis=0), seeds[0][1])
    return out


def compare(arms: dict[str, list], baseline: str, out_dir: str | Path | None = None, *,
            column: str | None = None, config: dict | None = None, runs: dict[str, list[str]] | None = None,
            steps: dict[str, list[int]] | None = None, **options) -> dict:
    """Compare every arm with ``baseline`` on every metric all arms share; write ablation.json,
    ablation.md and ablation.html to ``out_dir`` when given.  ``arms``: arm -> evaluation.json
    paths (or loaded dicts), one per seed; ``column``: the evaluated model's column (default: each
    evaluation's first model); ``runs``: arm -> run names, recorded; ``steps``: arm -> optimizer
    steps of each run (a run of 0 steps is warned about: its model is its initialisation);
    ``options``: DEFAULTS."""
    opts = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown ablation options {sorted(unknown)}")
    if baseline not in arms:
        raise ValueError(f"baseline arm {baseline!r} is not among the arms {sorted(arms)}")
    if len(arms) < 2 or any(not v for v in arms.values()):
        raise ValueError("an ablation needs the baseline and at least one other arm, each with an evaluation")
    loaded = {arm: [e if isinstance(e, dict) else _load(e) for e in evs] for arm, evs in arms.items()}
    _data_digests([e for evs in loaded.values() for e in evs])
    items = {arm: _arm_items(evs, column) for arm, evs in loaded.items()}
    all_names = [metric_name(r) for r in loaded[baseline][0]["rows"]]
    shared = [m for m in all_names if all(m in items[arm] for arm in arms)]
    skipped = [m for m in all_names if m not in shared]
    metrics = []
    for name in shared:
        base, classes = items[baseline][name]
        benchmark, _, rest = name.partition("/")
        data, _, measure = rest.rpartition("/")
        for arm in arms:
            if arm == baseline:
                continue
            values, _ = items[arm][name]
            if len(values) != len(base):
                skipped.append(f"{name} ({arm}: {len(values)} items vs {len(base)})")
                continue
            res = bootstrap_diff(values, base, classes, resamples=opts["resamples"], ci=opts["ci"], seed=opts["seed"])
            metrics.append({"metric": name, "arm": arm, **res, "benchmark": benchmark, "data": data,
                            "measure": measure, "ci_level": opts["ci"]})
    warnings = [f"arm {arm}: run {(runs or {}).get(arm, [str(i)] * (i + 1))[i]} made 0 optimizer steps, so its model is "
                f"its untrained initialisation (fewer training pairs than one batch?)"
                for arm, arm_steps in (steps or {}).items() for i, n in enumerate(arm_steps) if n == 0]
    result = {
        "baseline": baseline,
        "arms": {arm: {"evaluations": [str(e) for e in arms[arm] if not isinstance(e, dict)],
                       "runs": (runs or {}).get(arm, []), "seeds": len(loaded[arm]),
                       "models": [ev["models"][0]["digest"] for ev in loaded[arm]],
                       **({"steps": steps[arm]} if steps and arm in steps else {})} for arm in arms},
        "metrics": metrics,
        "skipped": skipped,
        "warnings": warnings,
        "config": {**(config or {}), "baseline": baseline, **opts},
    }
    if out_dir is not None:
        write(result, out_dir)
    return result


def write(result: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "ablation.json", "md": out_dir / "ablation.md", "html": out_dir / "ablation.html"}
    paths["json"].write_text(json.dumps(result, indent=1))
    paths["md"].write_text(markdown(result))
    paths["html"].write_text(to_html(result))
    return paths


# ------------------------------------------------------------------------------ tables
READING = ("diff = arm - baseline on the same test items (seeds averaged); CI = paired bootstrap "
           "percentile interval over the items; * = the interval excludes 0.")


def _f(v: float) -> str:
    return f"{v:+.3f}" if v is not None else ""


def _ci_label(result: dict) -> str:
    return f"{round(100 * result['config']['ci'])}% CI"


def markdown(result: dict) -> str:
    """One row per (metric, arm): baseline value, arm value, difference, interval, excludes 0."""
    base = result["baseline"]
    lines = ["## Ablation", "", f"Baseline arm: **{base}**. {READING}", ""]
    for arm, a in result["arms"].items():
        lines.append(f"- **{arm}**: {a['seeds']} seed(s)" + (f", runs {', '.join(a['runs'])}" if a["runs"] else "")
                     + (f", optimizer steps {', '.join(map(str, a['steps']))}" if a.get("steps") else ""))
    lines += [f"\n**Warning**: {w}" for w in result.get("warnings", [])]
    lines += ["", f"| metric | arm | n | {base} | arm value | diff | {_ci_label(result)} | excludes 0 |",
              "|---|---|---:|---:|---:|---:|---|:---:|"]
    for m in result["metrics"]:
        lines.append(f"| {m['metric']} | {m['arm']} | {m['n_items']} | {m['baseline_value']:.3f} | {m['value']:.3f} | "
                     f"{_f(m['diff'])} | [{_f(m['ci_low'])}, {_f(m['ci_high'])}] | {'*' if m['excludes_zero'] else ''} |")
    if result["skipped"]:
        lines += ["", "Not compared (no per-item outcomes in every arm):"] + [f"- {s}" for s in result["skipped"]]
    lines.append("")
    return "\n".join(lines)


SIG = ' class="sig"'  # a row whose interval excludes 0
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def svg_chart(result: dict) -> str:
    """Horizontal bars of each arm's difference from the baseline, one group per metric, with the
    interval as an error bar and a line at 0 (inline SVG, no plotting library)."""
    metrics = list(dict.fromkeys(m["metric"] for m in result["metrics"]))
    arms = [a for a in result["arms"] if a != result["baseline"]]
    colour = {a: COLOURS[i % len(COLOURS)] for i, a in enumerate(arms)}
    by = {(m["metric"], m["arm"]): m for m in result["metrics"]}
    bar, gap, label_w, plot_w, top = 12, 10, 300, 420, 30
    span = max([abs(v) for m in result["metrics"] for v in (m["ci_low"], m["ci_high"], m["diff"])] + [1e-3])
    span = math.ceil(span * 20) / 20  # axis to the next 0.05
    x0 = label_w + plot_w / 2

    def x(v):
        return x0 + v / span * (plot_w / 2)

    height = top + len(metrics) * (len(arms) * bar + gap) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}" '
           f'font-family="sans-serif" font-size="11" role="img" aria-label="difference from {html.escape(result["baseline"])}">']
    for i, a in enumerate(arms):  # legend
        out.append(f'<rect x="{label_w + i * 140}" y="4" width="10" height="10" fill="{colour[a]}"/>'
                   f'<text x="{label_w + i * 140 + 14}" y="13">{html.escape(a)}</text>')
    y = top
    for name in metrics:
        out.append(f'<text x="{label_w - 6}" y="{y + len(arms) * bar / 2 + 4}" text-anchor="end">{html.escape(name)}</text>')
        for a in arms:
            m = by.get((name, a))
            if m:
                x1, x2 = sorted((x(0), x(m["diff"])))
                out.append(f'<rect class="bar" data-arm="{html.escape(a)}" data-metric="{html.escape(name)}" x="{x1:.1f}" '
                           f'y="{y + 1}" width="{max(x2 - x1, 0.5):.1f}" height="{bar - 2}" fill="{colour[a]}">'
                           f'<title>{html.escape(a)}: {m["diff"]:+.3f} [{m["ci_low"]:+.3f}, {m["ci_high"]:+.3f}]</title></rect>')
                cy = y + bar / 2
                out.append(f'<path class="ci" d="M{x(m["ci_low"]):.1f},{cy} H{x(m["ci_high"]):.1f} '
                           f'M{x(m["ci_low"]):.1f},{cy - 3} v6 M{x(m["ci_high"]):.1f},{cy - 3} v6" stroke="#000"/>')
            y += bar
        y += gap
    out.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{y}" stroke="#555"/>')
    for v in (-span, -span / 2, 0, span / 2, span):
        out.append(f'<text x="{x(v):.1f}" y="{y + 14}" text-anchor="middle">{v:+.2f}</text>')
    out.append(f'<text x="{x0}" y="{y + 30}" text-anchor="middle">difference from {html.escape(result["baseline"])} '
               f'(bars) with its {_ci_label(result)} (error bars)</text>')
    out.append("</svg>")
    return "\n".join(out)


def to_html(result: dict) -> str:
    """A self-contained page: the chart, then the table of ``markdown`` as HTML."""
    e = html.escape
    base = result["baseline"]
    rows = "\n".join(
        f"<tr{SIG if m['excludes_zero'] else ''}><td>{e(m['metric'])}</td><td>{e(m['arm'])}</td>"
        f"<td>{m['n_items']}</td><td>{m['baseline_value']:.3f}</td><td>{m['value']:.3f}</td><td>{_f(m['diff'])}</td>"
        f"<td>[{_f(m['ci_low'])}, {_f(m['ci_high'])}]</td><td>{'*' if m['excludes_zero'] else ''}</td></tr>"
        for m in result["metrics"])
    arms = "".join(f"<li><b>{e(a)}</b>: {v['seeds']} seed(s){(', runs ' + e(', '.join(v['runs']))) if v['runs'] else ''}"
                   f"{(', optimizer steps ' + ', '.join(map(str, v['steps']))) if v.get('steps') else ''}</li>"
                   for a, v in result["arms"].items())
    skipped = "".join(f"<li>{e(s)}</li>" for s in result["skipped"])
    warnings = "".join(f"<p><b>Warning</b>: {e(w)}</p>" for w in result.get("warnings", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>panel2patch ablation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:2px 6px}}
td:nth-child(n+3){{text-align:right}} tr.sig td{{font-weight:bold}}</style></head>
<body><h1>Ablation</h1>
<p>Baseline arm: <b>{e(base)}</b>. {e(READING)}</p><ul>{arms}</ul>{warnings}
{svg_chart(result)}
<table><thead><tr><th>metric</th><th>arm</th><th>n</th><th>{e(base)}</th><th>arm value</th><th>diff</th>
<th>{_ci_label(result)}</th><th>excludes 0</th></tr></thead><tbody>
{rows}
</tbody></table>
{'<p>Not compared (no per-item outcomes in every arm):</p><ul>' + skipped + '</ul>' if skipped else ''}
</body></html>
"""


# ------------------------------------------------------------------------------ MLflow
def log_to_mlflow(result: dict, out_dir: str | Path, name: str, results_dir: str | Path,
                  tracking_cfg: dict | None = None) -> str:
    """A nested ``ablation:<name>`` run: per (arm, metric) the diff and its interval as metrics,
    the tables as artifacts and their sha256 as output tags."""
    import re

    import mlflow

    from panel2patch.tracking import stage_run

    out_dir = Path(out_dir)
    params = {**result["config"], "arms": sorted(result["arms"])}
    with stage_run("ablation", name, params, results_dir, tracking_cfg) as run:
        metrics = {}
        for m in result["metrics"]:
            key = re.sub(r"[^A-Za-z0-9_\-./]", "_", f"{m['arm']}/{m['metric'].replace(' R@', '_r').replace(' ', '_')}")
            metrics.update({f"{key}/diff": m["diff"], f"{key}/ci_low": m["ci_low"], f"{key}/ci_high": m["ci_high"]})
        run.log_metrics(metrics)
        for f in ("ablation.json", "ablation.md", "ablation.html"):
            mlflow.log_artifact(str(out_dir / f))
        run.log_outputs({"ablation": out_dir / "ablation.json", "table": out_dir / "ablation.md",
                         "html": out_dir / "ablation.html"})
        return run.run_id
