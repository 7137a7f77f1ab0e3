"""``panel2patch audit`` on a real workflow run (conftest's ``demo``): its lineage passes,
a tampered corpus shard, config value or input article fails naming the file or key, every data
stage reproduces bit for bit (rerun with the workflow in a scratch folder), and the papers' claims
are "not comparable" on the tiny demo run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import mlflow
import pytest

from panel2patch.audit import AuditError, audit
from panel2patch.audit.claims import compare_direction, compare_value, load_claims
from panel2patch.audit.records import open_record
from panel2patch.audit.reproduce import reproduce

from conftest import REPO


def cli(*args: str, cwd=None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "panel2patch.cli", "audit", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def rows_of(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith(("pass ", "fail ", "not comparable "))]


@pytest.mark.slow
def test_the_workflow_ends_with_an_audit_whose_lineage_passes(demo):
    result = json.loads((demo / "results/audit/audit.json").read_text())
    lineage = [r for r in result["rows"] if r["section"] == "lineage"]
    assert {r["check"] for r in lineage} == {"config", "git commit", "input articles", "stage outputs", "corpus shards",
                                             "shard articles", "models", "evaluations"}
    assert all(r["status"] == "pass" for r in lineage), [r for r in lineage if r["status"] != "pass"]
    assert result["failed"] == [] and not [r for r in result["rows"] if r["section"] == "reproduction"]  # demo: none
    # the tiny run is never the paper's: every claim is "not comparable", saying why
    claims = [r for r in result["rows"] if r["section"] == "claims"]
    assert claims and all(r["status"] == "not comparable" for r in claims)
    retrieval = next(r for r in claims if r["subject"] == "p2p-retrieval-i2t-r1 (tiny)")
    assert "model tiny vs ViT-L/14" in retrieval["detail"] and "training pairs vs ~400,000" in retrieval["detail"]
    assert "2512.02566" in retrieval["source"] and "single-panel retrieval" in retrieval["source"]
    ablation = next(r for r in claims if r["subject"] == "p2p-ablation-multi-granular")
    assert "no ablation run" in ablation["detail"]
    assert "Audit passed" in (demo / "results/audit/audit.md").read_text()
    assert "<table>" in (demo / "results/audit/audit.html").read_text()
    # logged to MLflow under the workflow's parent run
    mlflow.set_tracking_uri(f"sqlite:///{demo}/results/mlflow/mlflow.db")
    [run] = [r for r in mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
             if r.info.run_name == "audit:all"]
    assert run.data.tags["mlflow.parentRunId"] == result["parent_run"] and run.data.metrics["failed"] == 0
    assert {f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)} >= {"audit.md", "audit.html", "audit.json"}
    # the command on the same folder (here from a run folder inside it) agrees, exit status 0
    proc = cli(str(demo / "results/train/tiny"), "--no-mlflow", "--out", str(demo / "audit-cli"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert rows_of(proc.stdout) and not [r for r in rows_of(proc.stdout) if r.startswith("fail")]
    assert "Audit passed" in proc.stdout


@pytest.mark.slow
def test_a_tampered_shard_config_value_or_input_article_fails_the_audit_naming_it(demo, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(demo, work, ignore=shutil.ignore_patterns(".snakemake", ".git", "checkpoints"))
    tar = work / "results/corpus/shards/train-000000.tar"
    original = tar.read_bytes()
    tar.write_bytes(original[:5000] + bytes([original[5000] ^ 0xFF]) + original[5001:])  # one byte changed
    proc = cli("results", "--claims", "none", cwd=work)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    [failure] = [r for r in rows_of(proc.stdout) if r.startswith("fail")]
    assert "corpus shards" in failure and "results/corpus/shards/train-000000.tar" in failure
    assert "Audit FAILED: lineage 1 fail" in proc.stdout
    tar.write_bytes(original)

    config = work / "config/config.yaml"
    config.write_text(config.read_text().replace("pdf_dpi: 150", "pdf_dpi: 200"))
    proc = cli("results", "--claims", "none", "--out", str(tmp_path / "report"), cwd=work)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    [failure] = [r for r in rows_of(proc.stdout) if r.startswith("fail")]
    assert "config key ingest.pdf_dpi" in failure and "recorded 150" in proc.stdout and "has 200" in proc.stdout
    assert "config key ingest.pdf_dpi" in (tmp_path / "report/audit.md").read_text()
    # the audits were logged to the copy's own store (moved with results/), each with its failure count
    mlflow.set_tracking_uri(f"sqlite:///{work}/results/mlflow/mlflow.db")
    audits = [r for r in mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
              if r.info.run_name == "audit:all" and "mlflow.parentRunId" not in r.data.tags]
    assert sorted(r.data.metrics["failed"] for r in audits) == [1, 1]
    # a parent run the store does not hold
    (work / "results/mlflow/parent_run.json").write_text(json.dumps({"run_id": "0" * 32}))
    proc = cli("results", cwd=work)
    assert proc.returncode == 2 and f"no MLflow record of its parent run {'0' * 32}" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_ingest_reproduces_bit_for_bit_and_a_changed_input_does_not(demo, tmp_path):
    result = audit(demo / "results", reproduce_stages=["ingest"], scratch=tmp_path / "scratch")
    rep = [r for r in result["rows"] if r["section"] == "reproduction"]
    assert [r["subject"] for r in rep] == ["shard-00000", "shard-00001"]
    assert all(r["status"] == "pass" and "bit-identical" in r["detail"] for r in rep), rep
    # an input article changed on disk: lineage names the file, the rerun differs from the record
    work = tmp_path / "copy"
    shutil.copytree(demo, work, ignore=shutil.ignore_patterns(".snakemake", ".git", "checkpoints"))
    xml = work / "resources/sample/elife-01222/elife-01222.xml"
    xml.write_text(xml.read_text().replace("</caption>", " Changed.</caption>", 1))
    result = audit(work / "results", reproduce_stages=["ingest"])
    failed = {(r["check"], r["subject"]) for r in result["failed"]}
    assert ("input articles", "resources/sample/elife-01222/elife-01222.xml") in failed
    [shard0] = [r for r in result["rows"] if r["section"] == "reproduction" and r["subject"] == "shard-00000"]
    assert shard0["status"] == "fail" and "figures.parquet" in shard0["detail"]


@pytest.mark.slow
def test_every_data_stage_reproduces_bit_for_bit_training_within_tolerance_and_a_changed_config_fails_layout(demo, tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{demo}/results/mlflow/mlflow.db")
    before = len(mlflow.search_runs(experiment_names=["panel2patch"], output_format="list"))
    proc = cli("results", "--reproduce", "data,train", "--claims", "none", "--no-mlflow", "--out", str(tmp_path / "report"),
               "--scratch", str(tmp_path / "scratch"), cwd=demo, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = [r for r in json.loads((tmp_path / "report/audit.json").read_text())["rows"] if r["section"] == "reproduction"]
    shards = ["shard-00000", "shard-00001"]
    assert [(r["check"], r["subject"]) for r in rep] == [
        *[("ingest", s) for s in shards], ("ingest_summary", "all"), *[("text", s) for s in shards],
        *[("layout", s) for s in shards], *[("markers", s) for s in shards], *[("align", s) for s in shards],
        *[("corpus_pairs", s) for s in shards], ("corpus", "all"), ("train", "tiny")]
    assert all(r["status"] == "pass" and "bit-identical on rerun (" in r["detail"] for r in rep[:-1]), rep
    assert rep[-1]["status"] == "pass" and "final metrics within 0.05 on rerun" in rep[-1]["detail"], rep[-1]
    assert "commit" not in " ".join(r["detail"] for r in rep)  # the demo's checkout is at the recorded commit
    # the rerun tracked into the scratch folder's own store, never the audited one
    assert (tmp_path / "scratch/results/mlflow/mlflow.db").is_file()
    assert len(mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")) == before
    with pytest.raises(AuditError, match="not empty"):  # its outputs would pass for a rerun
        reproduce(open_record(demo / "results"), ["ingest"], tmp_path / "scratch")

    # the recorded config no longer produces the recorded outputs: layout (png crops recorded, jpeg
    # in the config) fails naming its files, ingest (upstream) still passes
    work = tmp_path / "copy"
    shutil.copytree(demo, work, ignore=shutil.ignore_patterns(".snakemake", ".git", "checkpoints", "audit-cli"))
    parent = json.loads((work / "results/mlflow/parent_run.json").read_text())["run_id"]
    [recorded] = (work / "results/mlflow/artifacts").rglob(f"{parent}/artifacts/config.json")
    config = json.loads(recorded.read_text())
    assert config["layout"]["crop_format"] == "png"
    recorded.write_text(json.dumps({**config, "layout": {**config["layout"], "crop_format": "jpeg"}}))
    result = audit(work / "results", reproduce_stages=["ingest", "layout"])
    rep = {(r["check"], r["subject"]): r for r in result["rows"] if r["section"] == "reproduction"}
    assert sorted(rep) == [("ingest", s) for s in shards] + [("layout", s) for s in shards]
    assert all(rep["ingest", s]["status"] == "pass" for s in shards), rep
    for s in shards:
        assert rep["layout", s]["status"] == "fail" and rep["layout", s] in result["failed"]
        assert f"results/{s}/layout/crops: sha256 recorded" in rep["layout", s]["detail"]
        assert "not a git checkout; the run recorded commit" in rep["layout", s]["detail"]  # the copy has no .git
    with pytest.raises(ValueError, match="reproducible stages are ingest, ingest_summary"):
        audit(work / "results", reproduce_stages=["evaluate"])


def test_not_a_results_folder_or_no_mlflow_record_is_a_usage_error(tmp_path):
    proc = cli(str(tmp_path / "nope"))
    assert proc.returncode == 2 and "no such folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(str(tmp_path))
    assert proc.returncode == 2 and "not a results folder (no mlflow/parent_run.json" in proc.stderr
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow/parent_run.json").write_text(json.dumps({"run_id": "0" * 32, "tracking_uri": "sqlite:///x.db"}))
    (tmp_path / "mlflow/mlflow.db").write_bytes(b"")  # an empty file: no store is created in it
    proc = cli(str(tmp_path), "--config", str(REPO / "config/config.yaml"))
    assert proc.returncode == 2 and "mlflow.db is not an MLflow store" in proc.stderr, proc.stderr
    assert (tmp_path / "mlflow/mlflow.db").stat().st_size == 0
    assert cli(str(tmp_path), "--reproduce", "evaluate").returncode == 2


def test_claims_compare_only_comparable_runs_and_read_ablation_directions(tmp_path):
    claims = {c["id"]: c for c in load_claims(REPO / "config/claims")}
    assert {"p2p-retrieval-i2t-r1", "p2p-zeroshot-mean6", "prd-semantic-structure", "mgll-ablation-on-off"} <= set(claims)
    c = claims["p2p-retrieval-i2t-r1"]
    assert (c["reported"], c["baselines"], c["arxiv"]) == (36.6, {"BiomedCLIP": 33.7}, "2512.02566")
    row = {"benchmark": "retrieval", "data": "single-panel retrieval", "metric": "i2t R@1", "values": {"model": 0.37}}
    paper_like = {"name": "big", "model": "ViT-L/14", "training_pairs": 390_000, "rows": [row]}
    assert compare_value(c, paper_like)["status"] == "pass"  # 37.0 within 2 points of 36.6
    assert compare_value(c, {**paper_like, "rows": [{**row, "values": {"model": 0.30}}]})["status"] == "fail"
    small = compare_value(c, {**paper_like, "training_pairs": 40_000})
    assert small["status"] == "not comparable" and "40000 training pairs vs ~400,000" in small["detail"]
    other_test = compare_value(c, {**paper_like, "rows": [{**row, "data": "corpus-test/panel"}]})
    assert other_test["status"] == "not comparable" and "no 'single-panel retrieval' evaluation" in other_test["detail"]

    d = claims["p2p-ablation-multi-granular"]
    assert compare_direction(d, None, tmp_path / "ablation.json")["status"] == "not comparable"
    metric = {"benchmark": "retrieval", "data": "corpus-test/panel", "metric": "i2t R@1"}
    as_rows = {"rows": [{**metric, "values": {"tiny": 0.31, "tiny_figure_only": 0.22}}]}
    assert compare_direction(d, as_rows, tmp_path / "ablation.json")["status"] == "pass"
    as_runs = {"runs": [{"name": "multi-granular", "metrics": {"retrieval/corpus-test/panel/i2t_r1/model": 0.2}},
                        {"name": "figure-only", "metrics": {"retrieval/corpus-test/panel/i2t_r1": 0.25}}]}
    got = compare_direction(d, as_runs, tmp_path / "ablation.json")
    assert got["status"] == "fail" and "multi-granular 20.0 vs figure-only 25.0" in got["detail"]
    lacking = compare_direction(d, {"runs": {"tiny": {"metrics": {}}}}, tmp_path / "ablation.json")
    assert lacking["status"] == "not comparable" and "no corpus-test/panel i2t R@1" in lacking["detail"]
