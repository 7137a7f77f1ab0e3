"""The real Snakemake workflow on the sample corpus, with its MLflow lineage."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from panel2patch.corpus.check import check_corpus

from conftest import REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def copy_repo(dest: Path) -> Path:
    """The repository's own files (tracked or not ignored), without results/.venv/caches."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = copy_repo(tmp_path_factory.mktemp("wf"))
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Supervision yield:" in proc.stderr  # printed at the end of the run
    return work


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_demo_ingests_every_figure(demo):
    summary = json.loads((demo / "results/ingest/summary.json").read_text())
    assert summary["shards"] == 2 and summary["articles"] == 6
    assert summary["figures_by_source"]["jats"] == 8 and summary["figures_by_source"]["pdf"] == 15
    assert summary["skip_reasons"] == {"no-figures": 1}
    for shard in ("shard-00000", "shard-00001"):
        for stage in ("ingest", "text", "layout", "align", "markers", "corpus_pairs"):
            assert (demo / f"results/logs/{stage}/{shard}.log").stat().st_size > 0
            assert (demo / f"results/benchmarks/{stage}/{shard}.tsv").exists()
    subs = pd.read_parquet(demo / "results/shard-00000/text/subcaptions.parquet").set_index(["figure_id", "key"])
    assert "elife-32671__fig1" in {f for f, _ in subs.index}, "the sample's shard layout changed"
    assert subs.loc[("elife-32671__fig1", "A"), "full_text"].startswith("Two-photon imaging and photostimulation")
    assert {k for f, k in subs.index if f == "elife-32671__fig1"} == {"_shared", *"ABCDEFG"}
    # panels of the real figure get their subcaption through their printed letter
    pairs = pd.read_parquet(demo / "results/shard-00000/align/panel_text.parquet")
    fig1 = pairs[pairs.figure_id == "elife-32671__fig1"]
    by_letter = fig1[fig1.method == "letter"].set_index("key")
    assert len(by_letter) >= 6 and by_letter.loc["A", "text"] == subs.loc[("elife-32671__fig1", "A"), "full_text"]


def test_mlflow_lineage(demo):
    mlflow.set_tracking_uri(f"sqlite:///{demo}/results/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("panel2patch.level") == "workflow"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["shard_size"] == "4" and parent.data.params["ingest.pdf_dpi"] == "150"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["input-units"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {f"{stage}:{shard}" for stage in ("ingest", "text", "layout", "align", "markers", "corpus_pairs")
                             for shard in ("shard-00000", "shard-00001")} | {"ingest_summary:all", "corpus:all",
                                                                             "corpus_report:all", "train:tiny"}
    for shard in ("shard-00000", "shard-00001"):
        run = children[f"ingest:{shard}"]
        assert run.info.status == "FINISHED"
        assert run.data.params["pdf_method"] == "auto"
        assert run.data.metrics["figures"] >= 1 and "seconds" in run.data.metrics
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == [f"ingest-{shard}"]
        for name in ("figures", "articles", "skips"):
            assert run.data.tags[f"output.{name}.sha256"] == sha256(demo / f"results/{shard}/ingest/{name}.parquet")
        assert len(run.data.tags["output.images.sha256"]) == 64
    assert children["text:shard-00000"].data.metrics["subcaptions"] > 0
    total = children["ingest_summary:all"].data.metrics["figures"]
    assert total == json.loads((demo / "results/ingest/summary.json").read_text())["figures"]
    corpus = children["corpus:all"]
    assert [d.dataset.name for d in corpus.inputs.dataset_inputs] == ["corpus-shards"]  # manifest, sha256 per shard
    assert corpus.data.tags["output.sizes.sha256"] == sha256(demo / "results/corpus/shards/sizes.json")
    assert corpus.data.metrics["yield.all"] == json.loads((demo / "results/corpus/yield.json").read_text())["per_figure"]["all"]


def test_demo_builds_a_linked_three_level_corpus_and_report(demo):
    problems, stats = check_corpus(demo / "results/corpus")
    assert problems == [] and stats["articles"] == 6
    assert set(stats["levels"]) == {"figure", "panel", "patch"}  # the arrows of the sample's eLife 01222 figure
    yld = json.loads((demo / "results/corpus/yield.json").read_text())
    assert yld["per_figure"]["panel"] > 1 and set(yld["by_split"]) == {"train", "val", "test"}
    result = json.loads((demo / "results/train/tiny/result.json").read_text())
    assert result["world_size"] == 2 and (demo / "results/train/tiny/final").is_dir()
    page = (demo / "results/corpus/report/index.html").read_text()
    assert "10.7554_eLife.01222__fig4" in page and (demo / "results/corpus/report/img").is_dir()


def test_rerun_has_nothing_to_do_and_dry_run_logs_nothing(demo):
    proc = snakemake(demo, "-n")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
    mlflow.set_tracking_uri(f"sqlite:///{demo}/results/mlflow/mlflow.db")
    parents = [r for r in mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
               if r.data.tags.get("panel2patch.level") == "workflow"]
    assert len(parents) == 1


def test_bad_config_is_a_clear_error(demo):
    proc = snakemake(demo, "-n", "--config", "shard_size=0")
    assert proc.returncode != 0 and "shard_size" in proc.stdout + proc.stderr
    proc = snakemake(demo, "-n", "--config", "inputs=[no/such/folder]")
    assert proc.returncode != 0 and "input path does not exist: no/such/folder" in proc.stdout + proc.stderr
