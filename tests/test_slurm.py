"""End to end on a real single-node Slurm: `snakemake --cores all --profile slurm`, verbatim.

A private cluster (tests/slurm_cluster.py: munged, slurmctld, slurmd under /tmp/p2p-slurm-*,
free ports, never /etc/slurm) runs the ingest DAG of a copy of the repository through sbatch
with the repository's own profile (slurm/config.v8+.yaml); a second test runs rule train as one
sbatch job of 2 tasks whose srun starts both trainer ranks; a third starts a two-node cluster
(SlurmCluster(nodes=2): two slurmd in network namespaces on a bridge) and checks that rule train with
`nodes: 2` trains exactly like the same run on one node. Skips, saying why, only where Slurm
cannot be installed or started; with P2P_REQUIRE_SLURM=1 that is a failure instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_cluster import SlurmCluster, SlurmUnavailable

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# snakemake is killed (SIGKILL: SIGTERM only makes it wait for its jobs) after this many seconds
RUN_TIMEOUT = int(os.environ.get("P2P_SLURM_TIMEOUT", "900"))
COMMAND = ["snakemake", "--cores", "all", "--profile", "slurm"]
EXCLUDE = {".git", ".venv", "results", ".snakemake", ".pytest_cache", "__pycache__", "build", ".whl"}


def _venv_bin() -> Path:
    """The venv whose snakemake the test runs: the repository's .venv, else this interpreter's."""
    for cand in (REPO / ".venv" / "bin", Path(sys.executable).parent):
        if (cand / "snakemake").exists():
            return cand
    pytest.fail(f"no snakemake next to {sys.executable} nor in {REPO / '.venv/bin'}")


def copy_repo(dst: Path) -> int:
    """Copy what a clone would hold: git's tracked files plus untracked, not ignored ones (the
    working tree under test), or, without git, everything but EXCLUDE. Returns the file count."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=REPO, capture_output=True, check=True, timeout=30).stdout
        files = [f for f in out.decode().split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.SubprocessError):
        files = []
    if files:
        for f in files:
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
        # a clone is a git checkout: its runs record a commit (the audit rule checks they do)
        git = ["git", "-c", "user.name=panel2patch tests", "-c", "user.email=tests@localhost", "-c", "commit.gpgsign=false"]
        for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the working tree under test"]):
            subprocess.run([*git, *cmd], cwd=dst, check=True, capture_output=True, timeout=120)
        return len(files)
    shutil.copytree(REPO, dst, dirs_exist_ok=True, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in EXCLUDE or n.endswith(".egg-info")])
    return sum(1 for p in dst.rglob("*") if p.is_file())


@pytest.fixture
def cluster():
    c = SlurmCluster()
    try:
        c.start()
    except SlurmUnavailable as e:
        c.cleanup()
        if os.environ.get("P2P_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required (P2P_REQUIRE_SLURM=1) but unavailable: {e}")
        print(f"\nSKIP test_slurm: {e}")
        pytest.skip(f"cannot install or start Slurm: {e}")
    try:
        yield c
    finally:
        c.stop()  # no-op where the test already stopped it
        c.cleanup()


def _squeue(cluster: SlurmCluster) -> list[dict]:
    """Every job the controller still knows: finished ones stay MinJobAge (the test cluster's 2 h;
    Slurm's default 300 s lost the first jobs of a whole-DAG run that took 430 s on a loaded machine)."""
    res = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%j|%T|%k"], env=cluster.env(),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    rows = [line.split("|", 3) for line in res.stdout.splitlines() if line.strip()]
    return [dict(zip(("id", "name", "state", "comment"), r)) for r in rows]


def _mlflow_runs(results: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{results / 'mlflow' / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=1000)


def test_snakemake_profile_slurm(cluster: SlurmCluster, tmp_path: Path):
    t0 = time.monotonic()
    work = tmp_path / "repo"
    work.mkdir()
    n_files = copy_repo(work)
    assert (work / "slurm" / "config.v8+.yaml").is_file() and (work / "Snakefile").is_file()
    t_copy = time.monotonic() - t0

    venv_bin = _venv_bin()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', os.defpath)}"
    env = cluster.env(env)  # SLURM_CONF + the srun wrapper first on PATH, no inherited SLURM_*
    timeout_bin = shutil.which("timeout") or pytest.fail("coreutils `timeout` not found")

    t1 = time.monotonic()
    res = subprocess.run([timeout_bin, "-s", "KILL", str(RUN_TIMEOUT), *COMMAND], cwd=work, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=RUN_TIMEOUT + 30)
    t_run = time.monotonic() - t1
    (tmp_path / "snakemake.out").write_text(res.stdout)
    jobs = _squeue(cluster)
    ctld_log = cluster.log_file("slurmctld").read_text(errors="replace")

    # Stop the daemons before the assertions, so a failed assertion leaves nothing running.
    t2 = time.monotonic()
    pids = cluster.stop()
    t_stop = time.monotonic() - t2
    alive = cluster.alive()

    def context() -> str:
        logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
        kept = "".join(f"\n--- {p.relative_to(work)}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs[-4:])
        return (f"\n$ {' '.join(COMMAND)}  (cwd {work}, exit {res.returncode})\n{res.stdout[-6000:]}"
                f"\nsqueue: {jobs}{kept}{cluster.log_tails()}")

    print(f"\n[slurm test] copy {n_files} files {t_copy:.1f}s | cluster start {cluster.timings.get('start_s', 0):.1f}s"
          f" | snakemake --profile slurm {t_run:.1f}s | stop {t_stop:.1f}s | total {time.monotonic() - t0:.1f}s"
          f" | jobs {[(j['id'], j['comment'], j['state']) for j in jobs]}")

    assert not alive, f"daemons still running after stop: {alive} (started {pids})"
    assert res.returncode != 137, f"snakemake killed after {RUN_TIMEOUT}s" + context()
    assert res.returncode == 0, context()

    summary = json.loads((work / "results" / "ingest" / "summary.json").read_text())
    assert summary["figures"] > 0, summary

    # The jobs went through Slurm: one job per rule job, all COMPLETED, one workflow run uuid.
    rules = [j["comment"].split("_wildcards_")[0] for j in jobs]
    assert jobs and all(j["state"] == "COMPLETED" for j in jobs), context()
    assert rules.count("rule_ingest") == summary["shards"] and rules.count("rule_ingest_summary") == 1, context()
    for rule in ("rule_text", "rule_layout", "rule_align_panels", "rule_markers", "rule_corpus_pairs"):
        assert rules.count(rule) == summary["shards"], context()
    assert rules.count("rule_corpus") == 1 and rules.count("rule_corpus_report") == 1, context()
    assert rules.count("rule_evaluate") == 1 and rules.count("rule_audit") == 1, context()  # the audit last
    assert rules.count("rule_train") == 1, context()  # the demo's tiny pretraining run, 2 ranks by srun
    assert len({j["name"] for j in jobs}) == 1, jobs
    job_ids = {j["id"] for j in jobs}
    for jid in job_ids:
        assert f"JobId={jid} " in ctld_log, f"JobId={jid} not in the slurmctld log"

    # MLflow: exactly one parent run (onstart ran once, in the main process only), one nested
    # run per job, each tagged with the Slurm job that ran it.
    results = work / "results"
    runs = _mlflow_runs(results)
    parents = [r for r in runs if r.data.tags.get("panel2patch.level") == "workflow"]
    stages = [r for r in runs if r.data.tags.get("panel2patch.level") == "stage"]
    table = [(r.info.run_name, r.data.tags.get("panel2patch.level"), r.data.tags.get("mlflow.parentRunId"),
              r.data.tags.get("slurm.job_id"), r.info.status) for r in runs]
    assert len(parents) == 1, f"expected 1 workflow parent run, got {len(parents)}: {table}"
    parent = parents[0]
    assert json.loads((results / "mlflow" / "parent_run.json").read_text())["run_id"] == parent.info.run_id
    assert parent.info.status == "FINISHED", table  # onsuccess ran
    assert "slurm.job_id" not in parent.data.tags, "parent run created inside a Slurm job"
    assert len(stages) == len(jobs), table
    assert all(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in stages), table
    assert sorted(r.info.run_name.split(":")[0] for r in stages) == sorted(
        ["ingest", "text", "layout", "align", "markers", "corpus_pairs"] * summary["shards"]
        + ["ingest_summary", "corpus", "corpus_report", "train", "evaluate", "audit"]), table
    assert {r.data.tags.get("slurm.job_id") for r in stages} == job_ids, table
    assert all(r.info.status == "FINISHED" for r in stages), table
    print(f"[slurm test] mlflow: {table}")


# The train rule alone, on synthetic shards in the corpus's place (the corpus rule is not
# included, so results/corpus/shards/sizes.json is a plain input): the rest of the DAG is
# covered above and would only slow this test down.
TRAIN_SNAKEFILE = """\
configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/train.smk"


rule all:
    input:
        expand(f"{RESULTS}/train/{{run}}/result.json", run=TRAIN["runs"]),
    default_target: True


onstart:
    start_tracking()


onsuccess:
    end_tracking("FINISHED")


onerror:
    end_tracking("FAILED")
"""


def test_train_rule_two_ranks_through_srun(cluster: SlurmCluster, tmp_path: Path):
    """rule train through `--profile slurm`: one sbatch job with 2 tasks whose `srun` starts both
    ranks (DeepSpeed ZeRO-2 over gloo); the job COMPLETED, both ranks ran, the model was exported."""
    import yaml

    from panel2patch.train.data import write_synthetic_shards

    t0 = time.monotonic()
    work = tmp_path / "repo"
    work.mkdir()
    copy_repo(work)
    (work / "Snakefile.train").write_text(TRAIN_SNAKEFILE)
    write_synthetic_shards(work / "results" / "corpus" / "shards", n_figures=12, seed=0, figures_per_shard=2)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"] = {**cfg.get("train", {}), "runs": ["tiny"], "tasks": 2, "cpus_per_task": 1, "mem_mb": 4000,
                    "runtime_min": 10, "launcher": "auto", "deepspeed": True,
                    "set": ["max_steps=2", "micro_batch=8", "eval_every_epoch=false", "checkpoint_every=0"]}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    env = cluster.env(env)
    command = [*COMMAND, "--snakefile", "Snakefile.train"]
    res = subprocess.run([shutil.which("timeout"), "-s", "KILL", str(RUN_TIMEOUT), *command], cwd=work, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=RUN_TIMEOUT + 30)
    t_run = time.monotonic() - t0
    jobs = _squeue(cluster)
    cluster.stop()
    out = work / "results" / "train" / "tiny"
    log = work / "results" / "logs" / "train" / "tiny.log"
    log_text = log.read_text(errors="replace") if log.exists() else "(no log)"

    def context() -> str:
        slurm_logs = sorted((work / ".snakemake" / "slurm_logs").rglob("*.log"))
        kept = "".join(f"\n--- {p.relative_to(work)}:\n{p.read_text(errors='replace')[-3000:]}" for p in slurm_logs)
        return (f"\n$ {' '.join(command)} (exit {res.returncode})\n{res.stdout[-4000:]}\nsqueue: {jobs}"
                f"\n--- {log}:\n{log_text[-4000:]}{kept}{cluster.log_tails()}")

    print(f"\n[slurm train test] {t_run:.1f}s | jobs {jobs}")
    assert res.returncode == 0, context()
    train_jobs = [j for j in jobs if j["comment"].startswith("rule_train")]
    assert len(train_jobs) == 1 and train_jobs[0]["state"] == "COMPLETED", context()
    # both ranks ran, started by srun (labelled "0: ", "1: ") with SLURM_* mapped to RANK/WORLD_SIZE
    assert "$ srun --ntasks=2 " in log_text, context()
    for r in (0, 1):
        assert f"{r}: rank {r}/2 local {r} " in log_text, context()
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2 and result["step"] == 2, result
    assert json.loads((out / "ds_config.json").read_text())["train_batch_size"] == 16  # 8 x 1 x 2 ranks
    assert (out / "final" / "open_clip_model.safetensors").is_file() and "world size 2" in (out / "final" / "README.md").read_text()
    runs = _mlflow_runs(work / "results")
    train_runs = [r for r in runs if r.info.run_name == "train:tiny"]
    assert len(train_runs) == 1 and train_runs[0].data.params["world_size"] == "2", [r.info.run_name for r in runs]
    assert train_runs[0].data.tags.get("slurm.job_id") == train_jobs[0]["id"]


def test_tracking_server_auto_through_the_slurm_profile(cluster: SlurmCluster, tmp_path: Path):
    """`--config 'tracking={server: auto}'` with the repository's profile: onstart starts the
    workflow's own mlflow server, every Slurm job logs its run over HTTP (it inherits the URI), and
    onsuccess stops the server. Only the ingest part of the DAG (one job per shard + the summary)."""
    work = tmp_path / "repo"
    work.mkdir()
    copy_repo(work)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', os.defpath)}"
    env = cluster.env(env)
    res = subprocess.run([shutil.which("timeout"), "-s", "KILL", str(RUN_TIMEOUT), *COMMAND, "results/ingest/summary.json",
                          "--config", "tracking={server: auto}"], cwd=work, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT + 30)
    jobs = _squeue(cluster)
    cluster.stop()
    assert res.returncode == 0, res.stdout[-6000:] + cluster.log_tails()
    results = work / "results"
    parent = json.loads((results / "mlflow" / "parent_run.json").read_text())
    assert parent["server"] == "auto" and parent["tracking_uri"].startswith("http://")
    assert not (results / "mlflow" / "server.json").exists()  # stopped by onsuccess
    assert f"MLflow server {parent['tracking_uri']}" in res.stdout
    log = (results / "logs" / "mlflow-server.log").read_text()
    assert "POST /api/2.0/mlflow/runs/create" in log and "Finished server process" in log
    port = parent["tracking_uri"].rsplit(":", 1)[1]
    assert subprocess.run(["pgrep", "-f", "--", f"--port {port} "], capture_output=True).returncode == 1, "server left running"
    runs = _mlflow_runs(results)  # the server wrote the embedded store
    stages = [r for r in runs if r.data.tags.get("panel2patch.level") == "stage"]
    assert jobs and all(j["state"] == "COMPLETED" for j in jobs), jobs
    assert len(stages) == len(jobs) and {r.data.tags.get("slurm.job_id") for r in stages} == {j["id"] for j in jobs}
    assert all(r.data.tags["mlflow.parentRunId"] == parent["run_id"] and r.info.status == "FINISHED" for r in stages)


# --------------------------------------------------------------------------------------------------
# Two nodes: rule train with nodes: 2 on a private two-node cluster (each node its own network
# namespace and address on a bridge, its own hostname; see SlurmCluster(nodes=2)).
TWO_NODE_STEPS = 4


@pytest.fixture
def two_node_cluster():
    c = SlurmCluster(nodes=2, cpus=2)  # 2 CPUs a node: the 1-node comparison puts both ranks on one
    try:
        c.start()
    except SlurmUnavailable as e:
        c.stop()
        c.cleanup()
        if os.environ.get("P2P_REQUIRE_SLURM") == "1":
            pytest.fail(f"Slurm required (P2P_REQUIRE_SLURM=1) but unavailable: {e}")
        print(f"\nSKIP two-node Slurm: {e}")
        pytest.skip(f"cannot start a two-node Slurm (network namespaces): {e}")
    try:
        yield c
    finally:
        c.stop()
        c.cleanup()


def _train_through_profile(cluster: SlurmCluster, work: Path, nodes: int) -> dict:
    """rule train (2 ranks, ZeRO-2, TWO_NODE_STEPS steps) through `--profile slurm` in a fresh copy
    of the repository at WORK with the given `train.nodes`; what the run left behind."""
    import yaml

    from panel2patch.train.data import write_synthetic_shards

    work.mkdir()
    copy_repo(work)
    (work / "Snakefile.train").write_text(TRAIN_SNAKEFILE)
    write_synthetic_shards(work / "results" / "corpus" / "shards", n_figures=12, seed=0, figures_per_shard=2)
    cfg_path = work / "config" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"] = {**cfg.get("train", {}), "runs": ["tiny"], "tasks": 2, "nodes": nodes, "cpus_per_task": 1,
                    "mem_mb": 4000, "runtime_min": 10, "launcher": "auto", "deepspeed": True,
                    "set": [f"max_steps={TWO_NODE_STEPS}", "micro_batch=8", "eval_every_epoch=false", "checkpoint_every=0"]}
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{_venv_bin()}{os.pathsep}{env.get('PATH', os.defpath)}"
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    command = [*COMMAND, "--snakefile", "Snakefile.train"]
    t0 = time.monotonic()
    res = subprocess.run([shutil.which("timeout"), "-s", "KILL", str(RUN_TIMEOUT), *command], cwd=work,
                         env=cluster.env(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=RUN_TIMEOUT + 30)
    log = work / "results" / "logs" / "train" / "tiny.log"
    out = work / "results" / "train" / "tiny"
    run = {"nodes": nodes, "rc": res.returncode, "stdout": res.stdout, "seconds": time.monotonic() - t0,
           "log": log.read_text(errors="replace") if log.exists() else "(no log)",
           "result": json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else None,
           "weights": out / "final" / "open_clip_model.safetensors"}
    (work.parent / f"train-{nodes}-node.log").write_text(run["log"])
    return run


def test_train_rule_on_two_nodes_equals_one_node(two_node_cluster: SlurmCluster, tmp_path: Path):
    """Issue #15 item 4. rule train with `nodes: 2` through `--profile slurm` on a two-node cluster:
    one sbatch job of 2 tasks on n1 and n2, whose `srun` starts rank 0 on n1 and rank 1 on n2
    (DeepSpeed ZeRO-2 over gloo between the nodes' addresses); then the same run with `nodes: 1`
    (both ranks on one node). Same world size, same data per rank: the same per-step loss curve
    and the same final weights."""
    from safetensors.torch import load_file

    cluster = two_node_cluster
    # the nodes are distinct hosts: srun from n1 (where a batch job runs) reaches both
    probe = cluster.run_on("n1", "srun", "-N2", "-n2", "-l", "sh", "-c", 'echo "$(hostname) $(hostname -I)"',
                           capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr + cluster.log_tails()
    seen = sorted(" ".join(line.split()) for line in probe.stdout.splitlines())
    assert seen == [f"0: n1 {cluster.node_addrs['n1']}", f"1: n2 {cluster.node_addrs['n2']}"], probe.stdout

    runs = {}
    for nodes in (2, 1):  # and how many bytes n2 sent and received meanwhile (its veth's counters)
        before = cluster.node_traffic("n2")
        runs[nodes] = _train_through_profile(cluster, tmp_path / f"repo{nodes}", nodes)
        after = cluster.node_traffic("n2")
        runs[nodes]["n2_traffic"] = {k: after[k] - before[k] for k in after}
    jobs = _squeue(cluster)
    nodelists = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%k|%N|%D"], env=cluster.env(),
                               capture_output=True, text=True, timeout=30).stdout.split()
    cluster.stop()

    def context(run: dict) -> str:
        return (f"\n--- nodes={run['nodes']} (exit {run['rc']}):\n{run['stdout'][-3000:]}\n--- train log:\n"
                f"{run['log'][-4000:]}\nsqueue: {jobs} {nodelists}{cluster.log_tails()}")

    for nodes, run in runs.items():
        print(f"\n[two-node test] nodes={nodes}: {run['seconds']:.1f}s, n2 sent/received bytes "
              f"{run['n2_traffic']}, losses {run['result'] and run['result']['losses']}")
        assert run["rc"] == 0 and run["result"], context(run)
        assert run["result"]["world_size"] == 2 and run["result"]["step"] == TWO_NODE_STEPS, context(run)
    print(f"[two-node test] jobs (comment|nodes|count): {nodelists}")

    # where the ranks ran: rank 0 on n1 and rank 1 on n2 (each with local rank 0) vs both on one node
    two, one = runs[2], runs[1]
    assert "$ srun --ntasks=2 --nodes=2 " in two["log"], context(two)
    assert "0: rank 0/2 local 0 on n1 " in two["log"] and "1: rank 1/2 local 0 on n2 " in two["log"], context(two)
    assert "$ srun --ntasks=2 --nodes=1 " in one["log"], context(one)
    hosts = {line.split(" on ")[1].split()[0] for line in one["log"].splitlines() if ": rank " in line and " on " in line}
    assert "0: rank 0/2 local 0 " in one["log"] and "1: rank 1/2 local 1 " in one["log"] and len(hosts) == 1, context(one)
    train_jobs = [line.split("|") for line in nodelists if line.startswith("rule_train")]
    assert sorted(j[2] for j in train_jobs) == ["1", "2"] and all(j[1] for j in train_jobs), nodelists

    # the same training: per-step losses and final weights
    l2, l1 = two["result"]["losses"], one["result"]["losses"]
    assert len(l2) == len(l1) == TWO_NODE_STEPS
    diff = max(abs(a - b) for a, b in zip(l2, l1))
    print(f"[two-node test] loss curve 2 nodes {l2}\n[two-node test] loss curve 1 node  {l1}\n"
          f"[two-node test] max |loss difference| {diff:.3g}")
    assert diff <= 1e-6, (l2, l1)
    w2, w1 = load_file(two["weights"]), load_file(one["weights"])
    assert w2.keys() == w1.keys()
    wdiff = max(float((w2[k].float() - w1[k].float()).abs().max()) for k in w2)
    print(f"[two-node test] max |weight difference| {wdiff:.3g} over {len(w2)} tensors")
    assert wdiff <= 1e-6

    # rank 1's gradients and parameters crossed the bridge: ZeRO-2's reduce-scatter and all-gather
    # move at least a byte per parameter and step each way; the 1-node run left n2 nearly silent
    n_params = sum(t.numel() for t in w2.values())
    for way in ("sent", "received"):
        assert two["n2_traffic"][way] > TWO_NODE_STEPS * n_params, (two["n2_traffic"], n_params)
        assert one["n2_traffic"][way] < 1_000_000, one["n2_traffic"]
