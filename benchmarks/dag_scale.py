"""How long ``snakemake -n`` takes as the input grows, where the time goes, and how many Slurm
jobs a run submits with and without grouping (issue #15).

    .venv/bin/python benchmarks/dag_scale.py                           # 10k, 100k, 1M articles
    .venv/bin/python benchmarks/dag_scale.py --sizes 10000 100000 --layout flat
    .venv/bin/python benchmarks/dag_scale.py --sizes 100000 --groups 20 --no-timing

Inputs: a light synthetic PMC OA bulk tree per size (benchmarks/make_bulk_tree.py --light: the
file lists and archives the DAG build reads; packages are not read before ingest), or with
``--layout flat`` a folder tree of empty ``PMCn.nxml`` files (1000 per folder: the walk and a
``stat`` per article, what a folder of articles costs). Trees are kept under --work and reused.

Each size runs ``snakemake -n --cores 1`` in a copy of this checkout (so results/units/ lands
there) twice, the second time with every shard manifest already written (a rerun's case), and
times the steps of the Snakefile's discovery in this process: the discovery walk or list
reading, sharding, writing the manifests. The fixed cost (imports, config, the rules' code
inputs) is a dry run on a 10-article tree; the rest is Snakemake's DAG. Each is given in wall
seconds, and in CPU seconds (the dry runs', and this process's for the steps), which a busy
machine disturbs less.

``--groups N``: also counts the Slurm jobs of the same dry run under ``--executor slurm``, as is
(one per rule job) and with the per-shard rules in one group per shard and N shards per Slurm
job (``--groups ...=shard --group-components shard=N``, as slurm/config.v8+.yaml sets them).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
SHARD_RULES = ("ingest", "text", "layout", "align_panels", "markers", "corpus_pairs")


def _tree_module():
    spec = importlib.util.spec_from_file_location("make_bulk_tree", REPO / "benchmarks" / "make_bulk_tree.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_input(work: Path, n: int, layout: str) -> Path:
    path = work / f"{layout}{n}"
    if (path / ".done").exists():
        return path
    shutil.rmtree(path, ignore_errors=True)
    if layout == "bulk":
        _tree_module().make_tree(path, n, light=True)
    else:
        for i in range(n):
            d = path / f"{i // 1000:04d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            (d / f"PMC{1_000_000 + 2 * i}.nxml").touch()
    (path / ".done").touch()
    return path


def copy_checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file() and not rel.startswith(("benchmarks/labels", "resources/sample/pdfs")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


CPU: list[float] = []  # CPU seconds (user + sys) of each dry run: less disturbed by a busy machine than wall time


def dry_run(work: Path, tree: Path, shard_size: int, *extra: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": f"{work / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([SNAKEMAKE, "-n", "--cores", "1", *extra, "--config", f"inputs=[{tree}]",
                           f"shard_size={shard_size}"], cwd=work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"snakemake -n failed:\n{out[-3000:]}")
    return wall, out


def total_jobs(out: str) -> int:
    return int(re.search(r"^total\s+(\d+)", out, re.M)[1])


def submitted_jobs(out: str) -> int:
    """Slurm jobs of a dry run: group jobs plus the jobs outside a group (indented rule lines are
    a group's members); ``all`` runs nothing and is not submitted."""
    groups = len(re.findall(r"Group job", out))
    alone = len([r for r in re.findall(r"^rule (\w+):", out, re.M) if r != "all"])
    return groups + alone


def steps(tree: Path, shard_size: int, hash_shards: int, scratch: Path, cache: Path | None = None) -> dict:
    """Seconds of the Snakefile's own steps (common.smk), measured here; ``cache``: the bulk-unit
    cache the dry runs wrote (a rerun's discovery loads it), else the lists are read."""
    sys.path.insert(0, str(REPO / "src"))
    from panel2patch.ingest import discover_units, make_shards
    from panel2patch.ingest.shards import write_manifests

    t, cpu = {}, {}

    def timed(name, fn, *args):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        t[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        return out

    units = timed("discover", discover_units, [tree], cache)
    shards = timed("shard", make_shards, units, shard_size, hash_shards)
    timed("manifests_first", write_manifests, shards, scratch)
    timed("manifests_unchanged", write_manifests, shards, scratch)
    t["units"], t["shards"], t["cpu"] = len(units), len(shards), cpu
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--layout", choices=["bulk", "flat"], default="bulk")
    ap.add_argument("--shard-size", type=int, default=2000,
                    help="PMC id range per shard (default 2000: ~1000 articles, as every second id is in the tree)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "p2p_dag_scale")
    ap.add_argument("--groups", type=int, default=0, help="also count Slurm jobs with N shards per group job")
    ap.add_argument("--no-timing", action="store_true", help="only the job counts (with --groups)")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"layout {args.layout}, shard_size {args.shard_size}; trees under {args.work}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for n in args.sizes:
        tree = make_input(args.work, n, args.layout)
        with tempfile.TemporaryDirectory(dir=args.work) as tmp:
            work = copy_checkout(Path(tmp) / "wf")
            if not args.no_timing:
                fixed, _ = dry_run(work, make_input(args.work, 10, args.layout), args.shard_size)
                shutil.rmtree(work / "results", ignore_errors=True)
                first, out = dry_run(work, tree, args.shard_size)
                again, _ = dry_run(work, tree, args.shard_size)
                t = steps(tree, args.shard_size, 16, Path(tmp) / "units", work / "results" / "cache")
                dag = again - fixed - t["discover"] - t["shard"] - t["manifests_unchanged"]
                c = t["cpu"]
                dag_cpu = CPU[-1] - CPU[-3] - c["discover"] - c["shard"] - c["manifests_unchanged"]
                print(f"{n:>9} articles {t['shards']:>5} shards {total_jobs(out):>6} jobs | snakemake -n: "
                      f"{first:6.1f} s first, {again:6.1f} s again (CPU {CPU[-2]:.1f} / {CPU[-1]:.1f} s) | fixed {fixed:.1f} s, discover {t['discover']:.1f} s, "
                      f"shard {t['shard']:.1f} s, manifests {t['manifests_first']:.1f} s first / "
                      f"{t['manifests_unchanged']:.1f} s unchanged, DAG+rest {dag:.1f} s", flush=True)
                print(f"{'':>9} CPU s of the run again: fixed {CPU[-3]:.1f}, discover {c['discover']:.1f}, shard "
                      f"{c['shard']:.1f}, manifests {c['manifests_unchanged']:.1f} unchanged, DAG+rest {dag_cpu:.1f}", flush=True)
            if args.groups:
                slurm = ("--executor", "slurm", "--slurm-no-account", "--jobs", "100")
                _, plain = dry_run(work, tree, args.shard_size, *slurm)
                grouped_args = (*slurm, "--groups", *(f"{r}=shard" for r in SHARD_RULES),
                                "--group-components", f"shard={args.groups}")
                _, grouped = dry_run(work, tree, args.shard_size, *grouped_args)
                print(f"{n:>9} articles: Slurm jobs submitted {submitted_jobs(plain)} one per rule job, "
                      f"{submitted_jobs(grouped)} grouped ({args.groups} shards per job)", flush=True)


if __name__ == "__main__":
    main()
