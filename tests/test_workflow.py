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

from conftest import REPO, SNAKEMAKE, copy_repo, snakemake  # noqa: F401 (other tests import them from here)

pytestmark = pytest.mark.slow


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
    a = subs.loc[("elife-32671__fig1", "A"), "full_text"]  # own subcaption first, then the shared text
    assert a.startswith("Dual two-photon excitation") and "Two-photon imaging and photostimulation" in a
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
                                                                             "corpus_report:all", "train:tiny",
                                                                             "evaluate:tiny", "audit:all"}
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
    # each dataset input points to the table of its rows (an artifact of its run)
    articles = pd.concat([pd.read_parquet(demo / f"results/{s}/ingest/articles.parquet") for s in ("shard-00000", "shard-00001")])
    ingested = pd.concat([_table(children[f"ingest:{s}"].inputs.dataset_inputs[0]) for s in ("shard-00000", "shard-00001")])
    assert sorted(ingested.article_id.dropna()) == sorted(articles.article_id)
    pdf = ingested.set_index("article_id").loc["10.7554/eLife.00790"]
    assert pdf.source_path == pdf.path == "resources/sample/pdfs/elife-00790.pdf" and pdf.sha256 == sha256(demo / pdf.path)
    corpus = children["corpus:all"]
    assert [d.dataset.name for d in corpus.inputs.dataset_inputs] == ["corpus-shards", "corpus-articles"]
    train = children["train:tiny"]
    assert {d.dataset.name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for d in train.inputs.dataset_inputs} == \
        {"corpus-shards": "training", "corpus-articles": "training"}
    shards = _table(train.inputs.dataset_inputs[0]).set_index("shard")
    manifest = pd.read_parquet(demo / "results/corpus/manifest.parquet").set_index("shard")
    assert shards.sha256.to_dict() == manifest.sha256.to_dict()
    in_model = _table(train.inputs.dataset_inputs[1])
    kept = pd.read_parquet(demo / "results/corpus/pairs.parquet").query("keep")
    assert set(in_model.article_id) == set(kept.article_id) and in_model.pairs.sum() == len(kept)
    # the model: logged with a signature, registered under tracking.registered_model_name
    assert train.data.tags["model.registered"] == "models:/panel2patch-tiny/1"
    model = mlflow.pyfunc.load_model("models:/panel2patch-tiny/1")
    assert model.metadata.signature.outputs.inputs[0].shape == (-1, 64)
    assert all(r.data.tags["panel2patch.run_group"] == parent.data.tags["panel2patch.run_group"] for r in children.values())
    assert corpus.data.tags["output.sizes.sha256"] == sha256(demo / "results/corpus/shards/sizes.json")
    assert corpus.data.metrics["yield.all"] == json.loads((demo / "results/corpus/yield.json").read_text())["per_figure"]["all"]


def _table(dataset_input) -> pd.DataFrame:
    return pd.read_csv(mlflow.data.get_source(dataset_input).load())


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
    # the evaluate rule: the trained model and its untrained baseline in every row, digests and data sha256
    ev = json.loads((demo / "results/evaluate/tiny/evaluation.json").read_text())
    assert [m["label"] for m in ev["models"]] == ["model", "untrained"] and not ev["failed"]
    assert ev["models"][0]["digest"] == result["weights_sha256"]
    assert {r["benchmark"] for r in ev["rows"]} >= {"retrieval", "zeroshot", "probe", "vqa", "perturbed"}
    assert all({"model", "untrained", "chance"} <= set(r["values"]) for r in ev["rows"])
    assert "| retrieval | corpus-test/panel | i2t R@1 |" in (demo / "results/evaluate/tiny/evaluation.md").read_text()


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


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A copy of the repository with no results (for checks that run nothing)."""
    return copy_repo(tmp_path_factory.mktemp("fresh"))


def test_lint_is_clean(fresh):
    proc = snakemake(fresh, "--lint")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Lints for" not in proc.stdout + proc.stderr


def test_nested_config_override_merges_into_the_defaults_and_validates(fresh):
    proc = snakemake(fresh, "-n", "--config", "layout={max_side: 900}", "corpus={split: {val: 0.2}}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = snakemake(fresh, "-n", "--config", "layout={max_side: 90}")  # typed, merged, then validated
    assert proc.returncode != 0 and "90 is less than the minimum of 200" in proc.stdout + proc.stderr
    proc = snakemake(fresh, "-n", "--config", "layout={reader: sideways}")
    assert proc.returncode != 0 and "'sideways' is not one of" in proc.stdout + proc.stderr


def _fake_conda(root: Path) -> Path:
    """A stand-in for conda on PATH: answers Snakemake's version and info queries, and `conda env
    create` makes the prefix with a `python` that records its arguments (no packages installed)."""
    bin_ = root / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "activate").write_text('PATH="$1/bin:$PATH"\n')
    (bin_ / "conda").write_text(f"""#!/bin/sh
case "$*" in
  "--version") echo "conda 24.11.3" ;;
  "info --json") echo '{{"conda_prefix": "{root}", "platform": "linux-64"}}' ;;
  "config --get channel_priority --json") echo '{{"get": {{"channel_priority": "strict"}}}}' ;;
  env\\ create*)
    prefix=$(echo "$*" | sed -n 's/.*--prefix "\\{{0,1\\}}\\([^" ]*\\).*/\\1/p')
    mkdir -p "$prefix/bin"
    printf '#!/bin/sh\\necho "$@" >> "{root}/python-calls"\\n' > "$prefix/bin/python"
    chmod +x "$prefix/bin/python" ;;
  clean*) ;;
  *) echo "fake conda: $*" >&2; exit 1 ;;
esac
""")
    (bin_ / "conda").chmod(0o755)
    return bin_


def test_every_rule_has_a_conda_env_that_installs_this_checkout(fresh, tmp_path):
    """With --software-deployment-method conda, Snakemake creates the env under the conda prefix and
    runs envs/panel2patch.post-deploy.sh there; it installs this checkout, whatever the prefix."""
    bin_ = _fake_conda(tmp_path / "conda")
    env = {**os.environ, "PATH": f"{bin_}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    base = [SNAKEMAKE, "--cores", "1", "--software-deployment-method", "conda"]
    listed = subprocess.run([*base, "--list-conda-envs"], cwd=fresh, capture_output=True, text=True, env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert "envs/panel2patch.yaml" in listed.stdout
    dry = subprocess.run([*base, "-n"], cwd=fresh, capture_output=True, text=True, env=env, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    for prefix in ([], ["--conda-prefix", str(tmp_path / "elsewhere")]):
        made = subprocess.run([*base, "--conda-create-envs-only", *prefix], cwd=fresh, capture_output=True, text=True,
                              env=env, timeout=300)
        assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
        calls = (tmp_path / "conda" / "python-calls").read_text().splitlines()
        assert calls[-1].split() == ["-m", "pip", "install", "--no-input", "-e", str(fresh)]
        assert (fresh / "pyproject.toml").is_file()


def test_library_edits_rerun_only_the_rules_that_run_them(demo):
    lib = demo / "src/panel2patch/layout/letters.py"
    text, stat = lib.read_text(), lib.stat()
    try:
        lib.write_text(text + "# an edit to the layout code\n")  # content, not just mtime (Snakemake checksums inputs)
        proc = snakemake(demo, "-n")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        planned = {line.split()[0] for line in out[out.index("Job stats"):].splitlines()[3:] if line.split()[:1]
                   and line.split()[0] != "total" and line.split()[-1].isdigit()}
        assert {"layout", "markers", "align_panels", "corpus_pairs", "corpus"} <= planned, out
        assert not planned & {"ingest", "text", "ingest_summary"}, out
    finally:
        lib.write_text(text)
        os.utime(lib, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(demo, "-n"))


def test_report_holds_the_results(demo, tmp_path):
    import zipfile

    proc = snakemake(demo, "--report", str(tmp_path / "report.zip"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    names = zipfile.ZipFile(tmp_path / "report.zip").namelist()
    for result in ("ingest/summary.json", "ingest/skips.tsv", "corpus/yield.json", "corpus/report.html",
                   "train/tiny/result.json", "evaluate/tiny/evaluation.md"):
        assert any(n.endswith(result.rsplit("/", 1)[1]) for n in names), (result, names)
    standalone = (demo / "results/corpus/report.html").read_text()
    assert "10.7554_eLife.01222__fig4" in standalone and 'src="data:image/jpeg;base64,' in standalone
    assert 'src="img/' not in standalone  # the QC report with its drawn figures in one file
    proc = snakemake(demo, "--report", str(tmp_path / "report.html"))  # a single self-contained page too
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > len(standalone)


def test_a_partial_rerun_attaches_to_the_same_parent_run(demo):
    """Last in this module (it adds runs): an output deleted and rebuilt reruns the jobs that need it,
    which nest under the first invocation's parent run as its invocation 2."""
    (demo / "results/ingest/summary.json").unlink()
    proc = snakemake(demo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{demo}/results/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
    [parent] = [r for r in runs if r.data.tags.get("panel2patch.level") == "workflow"]
    assert parent.info.status == "FINISHED" and parent.data.tags["panel2patch.invocations"] == "2"
    summaries = [r for r in runs if r.info.run_name == "ingest_summary:all"]
    assert sorted(r.data.tags["panel2patch.invocation"] for r in summaries) == ["1", "2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in summaries} == {parent.info.run_id}
    # exactly the jobs this invocation ran (the summary, the QC report that reads it, the audit) are its runs
    ran = {line.split("(Rule: ")[1].rstrip(")") for line in proc.stderr.splitlines() if "(Rule: " in line} - {"all"}
    again = [r for r in runs if r.data.tags.get("panel2patch.invocation") == "2"]
    assert ran == {"ingest_summary", "corpus_report", "audit"} == {r.info.run_name.split(":")[0] for r in again}, proc.stderr[-3000:]
    assert {r.data.tags["mlflow.parentRunId"] for r in again} == {parent.info.run_id}
