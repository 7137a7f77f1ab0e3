# Helpers shared by all rule files: config validation, input discovery, sharding, tracking.
import pandas as pd
from snakemake.utils import validate

from panel2patch import tracking
from panel2patch.ingest import discover_units, make_shards


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = "results"
UNITS = discover_units(config["inputs"])
SHARDS = make_shards(UNITS, config["shard_size"])


wildcard_constraints:
    shard=r"shard-\d+",


def shard_paths(wildcards):
    """Input files of one shard (so Snakemake reruns a shard when one of its articles changes)."""
    return [u.path for u in SHARDS[wildcards.shard]]


def shard_units(wildcards):
    return [u.as_dict() for u in SHARDS[wildcards.shard]]


def units_manifest():
    return pd.DataFrame(
        [{**u.as_dict(), "shard": shard} for shard, units in SHARDS.items() for u in units],
        columns=["path", "kind", "shard"],
    )


def get_final_output():
    return (
        [f"{RESULTS}/ingest/summary.json"]
        + expand(f"{RESULTS}/{{shard}}/align/panel_text.parquet", shard=SHARDS)
        + expand(f"{RESULTS}/{{shard}}/markers/patches.parquet", shard=SHARDS)
    )


def start_tracking():
    tracking.start_workflow_run(RESULTS, config, units_manifest())


def end_tracking(status):
    tracking.end_workflow_run(RESULTS, status)
