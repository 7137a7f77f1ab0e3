# Helpers shared by all rule files (config validation, input discovery, sharding, tracking).
import sys

import pandas as pd
from snakemake.utils import validate

from panel2patch import tracking
from panel2patch.ingest import discover_units, make_shards
from panel2patch.ingest.shards import write_manifests
from panel2patch.smk import coerce_overrides


# --config values are typed by the schema (nested ones arrive as strings), then validated
coerce_overrides(config, workflow.config_settings.overwrite_config, workflow.source_path("../schemas/config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = "results"
# A PMC OA bulk tree's file lists are read once per state of the lists and the units cached under
# results/cache/ (panel2patch.ingest.bulk): each Slurm job parses this file again and loads them.
UNITS = discover_units(config["inputs"], cache_dir=f"{RESULTS}/cache")
# Stable shards (panel2patch.ingest.shards): a PMCID range or a hash bucket per article, so added
# articles never move others; each shard's unit list is written to results/units/<shard>.json only
# when it changed, and is the ingest job's one input (not one input per article).
SHARDS = make_shards(UNITS, config["shard_size"], config["hash_shards"])
SHARD_MANIFESTS = write_manifests(SHARDS, f"{RESULTS}/units")
# What a job needs to find its MLflow store (in the rules' TRACKING param, inputs.smk).
JOB_TRACKING = {k: config["tracking"][k] for k in ("uri", "experiment")}


wildcard_constraints:
    shard=r"shard-(pmc)?\d+",


def shard_manifest(wildcards):
    """The shard's unit list (with a version stamp per article, so Snakemake reruns a shard when
    one of its articles changes); links are listed, never followed."""
    return SHARD_MANIFESTS[wildcards.shard]


def shard_units(wildcards):
    return [u.as_dict() for u in SHARDS[wildcards.shard]]


def units_manifest():
    return pd.DataFrame(
        [{**u.as_dict(), "shard": shard} for shard, units in SHARDS.items() for u in units],
        columns=["path", "kind", "shard"],
    )


def corpus_licence_table():
    """The licence table as an input (so a changed table reruns the pairs), or nothing."""
    path = config["corpus"].get("licence_table")
    return [path] if path else []


def get_final_output():
    """Every output of a run, the audit last (it reads the others' MLflow records)."""
    return audited_outputs() + [f"{RESULTS}/audit/audit.json"]


def audited_outputs():
    return [
        f"{RESULTS}/ingest/summary.json",
        f"{RESULTS}/corpus/shards/sizes.json",
        f"{RESULTS}/corpus/report",
    ] + expand(f"{RESULTS}/train/{{run}}/result.json", run=config["train"]["runs"]) + (
        expand(f"{RESULTS}/evaluate/{{run}}/evaluation.md", run=config["train"]["runs"])
        if config["evaluate"]["benchmarks"] else []
    )


# Ablation arms (workflow/rules/ablation.smk): train run `ablation-<arm>-s<seed>` per arm and seed
ABLATION = config["ablation"]
if ABLATION["baseline"] not in ABLATION["arms"]:
    raise ValueError(f"config ablation.baseline {ABLATION['baseline']!r} is not one of ablation.arms {sorted(ABLATION['arms'])}")


def ablation_arm_runs():
    """arm -> its train run names, one per seed (the same seeds in every arm)."""
    return {arm: [f"ablation-{arm}-s{seed}" for seed in ABLATION["seeds"]] for arm in ABLATION["arms"]}


def _ablation_run(run):
    """(arm, seed) of an ablation train run name, or None for any other run."""
    for arm, runs in ablation_arm_runs().items():
        if run in runs:
            return arm, ABLATION["seeds"][runs.index(run)]
    return None


def run_config(wildcards):
    """A train run's config: config/train/<run>.yaml, or an ablation arm's, written by the
    ablation_run_config rule."""
    if _ablation_run(wildcards.run):
        return f"{RESULTS}/ablation/runs/{wildcards.run}.yaml"
    return f"config/train/{wildcards.run}.yaml"


def ablation_base_config(wildcards):
    arm, _ = _ablation_run(wildcards.run)
    return f"config/train/{ABLATION['arms'][arm].get('config') or ABLATION['base']}.yaml"


def ablation_overrides(wildcards):
    """The arm's run config overrides: train.set, ablation.set, the arm's own, then the seed."""
    arm, seed = _ablation_run(wildcards.run)
    return [*config["train"]["set"], *ABLATION["set"], *ABLATION["arms"][arm].get("set", []), f"seed={seed}"]


def ablation_evaluations():
    """arm -> the evaluation.json of each of its runs."""
    return {arm: [f"{RESULTS}/evaluate/{run}/evaluation.json" for run in runs] for arm, runs in ablation_arm_runs().items()}


def ablation_evaluation_files():
    return [path for paths in ablation_evaluations().values() for path in paths]


def ablation_train_results():
    """arm -> the train result.json of each of its runs."""
    return {arm: [f"{RESULTS}/train/{run}/result.json" for run in runs] for arm, runs in ablation_arm_runs().items()}


def ablation_train_result_files():
    return [path for paths in ablation_train_results().values() for path in paths]


def train_overrides(wildcards):
    """train.set for a run of config/train/; none for an ablation arm, whose written run config
    holds train.set already, followed by the ablation's own overrides (which take precedence)."""
    return [] if _ablation_run(wildcards.run) else config["train"]["set"]
def claims_files(wildcards):
    """The claims files the audit compares with the metrics (so an edited claim reruns it)."""
    import glob

    folder = config["audit"]["claims"]
    return sorted(glob.glob(f"{folder}/*.yaml")) if folder else []


def print_yield():
    """The corpus's supervision yield, at the end of a successful run."""
    import json
    from pathlib import Path

    from panel2patch.corpus.stage import format_yield

    path = Path(RESULTS) / "corpus" / "yield.json"
    if path.exists():
        print(format_yield(json.loads(path.read_text())), file=sys.stderr)


def start_tracking():
    tracking.start_workflow_run(RESULTS, config, units_manifest())


def end_tracking(status):
    tracking.end_workflow_run(RESULTS, status)
