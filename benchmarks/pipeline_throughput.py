"""Throughput of the data DAG (ingest -> corpus) on a synthetic PMC OA bulk tree, and what all of
PMC OA would cost (issue #15).

    .venv/bin/python benchmarks/pipeline_throughput.py                      # 500 articles, all cores
    .venv/bin/python benchmarks/pipeline_throughput.py --articles 40 --shard-size 20   # a quick look

Makes a bulk tree of ``--articles`` articles (benchmarks/make_bulk_tree.py: real packages, the
sample's JATS and figure files under renamed ids), runs ``snakemake --cores N corpus`` on it in a
copy of this checkout (the default MLflow store, as a user runs it), and reads every job's
Snakemake ``benchmark:`` file (``results/benchmarks/<stage>/<shard>.tsv``: wall seconds, CPU
seconds of the job's process tree, peak RSS). Printed per stage: jobs, CPU seconds, figures per
CPU-second, the largest peak RSS of one job; end to end: CPU seconds of every job together (the
fixed per-job cost included: Python start, imports, MLflow), figures per CPU-second, wall time;
and the projection to ``--pmc-figures`` figures (PMC OA) and to Panel2Patch's 350k figures, in
CPU-hours, beside Panel2Patch's reported ~2,900 GPU-hours for its layout parse.

Every article of the tree copies one of four sample articles, so image sizes and caption lengths
are the sample's (eLife and PMC figures, 0.3-3 MP), not PMC's mix; the figure count per article
is the sample's too. The corpus de-duplicates the repeated images, so only the per-figure stages
(ingest .. corpus_pairs) measure throughput; ``corpus`` is reported as run.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# rule -> the folders of its jobs' benchmark files under results/benchmarks/, in DAG order
STAGES = {"ingest": ["ingest"], "ingest_summary": ["ingest:summary"], "text": ["text"], "layout": ["layout"],
          "align_panels": ["align"], "markers": ["markers"], "corpus_pairs": ["corpus_pairs"], "corpus": ["corpus"]}
PANEL2PATCH_FIGURES, PANEL2PATCH_GPU_HOURS = 350_000, 2_900  # "From Panel to Pixel": its layout parse


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stage_of(tsv: Path, bench: Path) -> str:
    """``ingest/shard-pmc1000.tsv`` -> ingest; the one-job rules beside per-shard ones keep their name."""
    stage = tsv.parent.relative_to(bench).as_posix()
    if (stage, tsv.stem) in {("ingest", "summary"), ("corpus", "report")}:
        return f"{stage}:{tsv.stem}"
    return stage


def read_benchmarks(results: Path) -> dict[str, dict]:
    """stage -> {jobs, s, cpu_s, max_rss_mb} summed (max for RSS) over its jobs' benchmark files."""
    bench, out = results / "benchmarks", defaultdict(lambda: {"jobs": 0, "s": 0.0, "cpu_s": 0.0, "max_rss_mb": 0.0})
    for tsv in sorted(bench.rglob("*.tsv")):
        with tsv.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        st = out[stage_of(tsv, bench)]
        for row in rows:  # one row per job (a benchmark repeat would add rows)
            st["jobs"] += 1
            st["s"] += float(row["s"])
            st["cpu_s"] += float(row.get("cpu_time") or 0)
            rss = row.get("max_rss", "NA")
            st["max_rss_mb"] = max(st["max_rss_mb"], float(rss) if rss not in ("NA", "-", "") else 0.0)
    return dict(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=500, help="articles in the synthetic bulk tree (default 500)")
    ap.add_argument("--shard-size", type=int, default=100,
                    help="PMC id range per shard (every second id is an article: ~half as many articles per shard)")
    ap.add_argument("--cores", default="all", help="snakemake --cores (default all)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/p2p-throughput"),
                    help="scratch folder (the tree and the checkout copy; removed first)")
    ap.add_argument("--pmc-figures", type=float, default=15e6, help="figures in PMC OA for the projection (15M+)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.articles < 1:
        ap.error("--articles must be >= 1")

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    tree = args.work / "bulk"
    t0 = time.perf_counter()
    _load("make_bulk_tree").make_tree(tree, args.articles)
    print(f"bulk tree: {args.articles} articles in {time.perf_counter() - t0:.1f} s -> {tree}", flush=True)
    work = _load("dag_scale").copy_checkout(args.work / "checkout")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(work / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    config = ["--config", f"inputs=[{tree}]", f"shard_size={args.shard_size}"]  # last: --config takes the rest
    log = (args.work / "snakemake.log").open("w")

    def run(*extra: str) -> tuple[float, float, float]:
        """wall s, CPU s (snakemake + its jobs), largest RSS of one process (MB; max so far)."""
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run([SNAKEMAKE, "corpus", "ingest_summary", "--cores", str(args.cores), *extra, *config], cwd=work, env=env, capture_output=True, text=True)
        wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
        log.write(f"$ snakemake corpus ingest_summary {' '.join(extra)}\n{proc.stdout}{proc.stderr}\n")
        log.flush()
        if proc.returncode != 0:
            print((proc.stdout + proc.stderr)[-4000:], file=sys.stderr)
            raise SystemExit(f"snakemake {' '.join(extra)} failed (exit {proc.returncode}); log: {log.name}")
        return wall, r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, r1.ru_maxrss / 1024

    # one snakemake per stage (--until: its jobs only, the earlier stages done), so each stage's CPU
    # seconds are measured whole (Snakemake's own benchmark files sample a job's CPU every few
    # seconds and miss short-lived processes); each includes one Snakemake start and DAG build,
    # measured alone as a dry run of the finished DAG at the end
    print(f"$ snakemake corpus ingest_summary --cores {args.cores} --until STAGE --config inputs=[{tree}] shard_size={args.shard_size}", flush=True)
    stages, wall_total, cpu_total = {}, 0.0, 0.0
    for stage in STAGES:
        wall, cpu, _ = run("--until", stage)
        stages[stage] = {"wall_s": wall, "cpu_s": cpu}
        wall_total, cpu_total = wall_total + wall, cpu_total + cpu
        print(f"  {stage}: {wall:.0f} s wall, {cpu:.1f} CPU s", flush=True)
    _, dry_cpu, peak_rss_all = run("-n")
    log.close()

    results = work / "results"
    summary = json.loads((results / "ingest" / "summary.json").read_text())
    figures = int(summary["figures"])
    jobs = read_benchmarks(results)  # per-job peak RSS (Snakemake's benchmark files)
    for stage, rule_dirs in STAGES.items():
        stages[stage]["jobs"] = sum(jobs.get(d, {}).get("jobs", 0) for d in rule_dirs)
        stages[stage]["max_rss_mb"] = max([jobs.get(d, {}).get("max_rss_mb", 0.0) for d in rule_dirs])

    print(f"\n{summary['articles']} articles ({summary.get('skips', 0)} skipped), {figures} figures, "
          f"{stages['ingest']['jobs']} shards, snakemake --cores {args.cores}: wall {wall_total:.0f} s, "
          f"{cpu_total:.0f} CPU s; one Snakemake start + DAG (dry run): {dry_cpu:.1f} CPU s\n")
    print("| stage | jobs | CPU s | figures / CPU-s | wall s | peak RSS of a job (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, s in stages.items():
        rate = f"{figures / s['cpu_s']:.2f}" if s["cpu_s"] > 0 else "-"
        print(f"| {name} | {s['jobs']} | {s['cpu_s']:.1f} | {rate} | {s['wall_s']:.0f} | {s['max_rss_mb']:.0f} |")
    print(f"| **end to end** | {sum(s['jobs'] for s in stages.values())} | {cpu_total:.1f} | "
          f"{figures / cpu_total:.2f} | {wall_total:.0f} | {peak_rss_all:.0f} (any process) |")
    per_fig = cpu_total / figures if figures else float("nan")
    wall, total_cpu = wall_total, cpu_total

    pmc_h = args.pmc_figures * per_fig / 3600
    p2p_h = PANEL2PATCH_FIGURES * per_fig / 3600
    print(f"\nCPU seconds per figure, end to end: {per_fig:.3f}")
    print(f"projection, PMC OA ({args.pmc_figures / 1e6:.0f}M figures): {pmc_h:,.0f} CPU-hours "
          f"(~{pmc_h / 24 / 1000:.1f} days on 1,000 cores)")
    print(f"projection, Panel2Patch's {PANEL2PATCH_FIGURES:,} figures: {p2p_h:,.0f} CPU-hours "
          f"(Panel2Patch: ~{PANEL2PATCH_GPU_HOURS:,} GPU-hours)")
    if args.json:
        args.json.write_text(json.dumps({
            "articles": summary["articles"], "figures": figures, "wall_s": wall, "cpu_s": total_cpu,
            "cpu_s_per_figure": per_fig, "peak_rss_mb": peak_rss_all, "stages": stages,
            "projection_cpu_hours": {"pmc_oa": pmc_h, "panel2patch_350k": p2p_h}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
