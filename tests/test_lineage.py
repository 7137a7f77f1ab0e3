"""MLflow lineage against a real SQLite-backed store: dataset inputs that list their rows, partial
reruns under one parent run, the model logged and registered, a store that moves with results/."""

from __future__ import annotations

import io
import json
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from panel2patch import tracking

from conftest import REPO


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)  # start_workflow_run sets it
    return tmp_path / "results"


def client_for(results) -> MlflowClient:
    uri = f"sqlite:///{results.resolve()}/mlflow/mlflow.db"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def runs_by_name(results) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in mlflow.search_runs(experiment_names=["panel2patch"], output_format="list", order_by=["attributes.start_time ASC"]):
        out.setdefault(r.info.run_name, []).append(r)
    return out


def table_of(dataset_input) -> pd.DataFrame:
    """The rows behind a dataset input, through MLflow's own API (its source)."""
    path = mlflow.data.get_source(dataset_input).load()
    return pd.read_csv(path) if path.endswith(".csv") else pd.read_parquet(path)


def test_a_dataset_input_points_to_the_table_of_its_rows(results):
    rows = pd.DataFrame({"article_id": ["PMC1", "PMC2", None], "path": ["a.nxml", "b.tar.gz", "c.pdf"],
                         "sha256": ["aa" * 32, "bb" * 32, "cc" * 32]})
    with tracking.stage_run("ingest", "shard-00000", {}, results) as run:
        run.log_manifest(rows, "ingest-shard-00000")
        run.log_manifest(rows.iloc[:0], "empty")  # a shard whose articles gave nothing
    client = client_for(results)
    got = client.get_run(run.run_id)
    [ds, empty] = sorted(got.inputs.dataset_inputs, key=lambda d: d.dataset.name != "ingest-shard-00000")
    assert json.loads(ds.dataset.source) == {"uri": f"runs:/{run.run_id}/datasets/ingest-shard-00000.csv"}
    assert ds.dataset.source_type == "mlflow_run_artifact" and json.loads(ds.dataset.profile)["num_rows"] == 3
    assert {t.key: t.value for t in ds.tags}["mlflow.data.context"] == "input"
    table = table_of(ds)
    assert table.article_id.tolist()[:2] == ["PMC1", "PMC2"] and table.sha256.tolist() == rows.sha256.tolist()
    assert table_of(empty).empty and list(table_of(empty).columns) == ["article_id", "path", "sha256"]
    # the artifact is in the embedded store under results/
    assert any((results / "mlflow" / "artifacts").rglob("ingest-shard-00000.csv"))


def test_ingest_dataset_lists_each_article_with_its_file_and_sha256(results, tmp_path):
    from panel2patch.ingest import discover_units
    from panel2patch.ingest.run import run_shard

    units = discover_units([str(REPO / "resources/sample/elife-01222"), str(REPO / "resources/sample/packages/elife-00353.tar.gz")])
    run_shard(units, results / "shard-00000" / "ingest", "shard-00000", {}, results, progress=False)
    client_for(results)
    [run] = runs_by_name(results)["ingest:shard-00000"]
    [ds] = run.inputs.dataset_inputs
    table = table_of(ds).set_index("article_id")
    assert set(table.index) == {"10.7554/eLife.01222", "10.7554/eLife.00353"}
    pkg = table.loc["10.7554/eLife.00353"]
    assert pkg.source_path.endswith("elife-00353.tar.gz!elife-00353/elife-00353-v1.xml")
    assert pkg.sha256 == tracking.sha256_path(REPO / "resources/sample/packages/elife-00353.tar.gz")
    articles = pd.read_parquet(results / "shard-00000/ingest/articles.parquet")
    assert sorted(articles.article_id) == sorted(table.index)


def test_a_partial_rerun_attaches_to_the_parent_run_and_a_new_config_shares_its_run_group(results):
    config = {"inputs": ["x"], "shard_size": 2, "tracking": {"uri": None}}
    first = tracking.start_workflow_run(results, config, pd.DataFrame({"path": ["a.nxml"], "kind": ["jats"], "shard": ["s0"]}))
    with tracking.stage_run("text", "shard-00000", {}, results):
        pass
    tracking.end_workflow_run(results, "FAILED")  # e.g. a later job failed

    again = tracking.start_workflow_run(results, config, pd.DataFrame({"path": ["a.nxml"], "kind": ["jats"], "shard": ["s0"]}))
    assert again == first
    with tracking.stage_run("text", "shard-00000", {}, results):  # snakemake -R text
        pass
    tracking.end_workflow_run(results, "FINISHED")
    client = client_for(results)
    parent = client.get_run(first)
    assert parent.info.status == "FINISHED" and parent.data.tags[tracking.INVOCATIONS_TAG] == "2"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["input-units"]  # same inputs: logged once
    texts = runs_by_name(results)["text:shard-00000"]
    assert [r.data.tags["mlflow.parentRunId"] for r in texts] == [first, first]
    assert [r.data.tags[tracking.INVOCATION_TAG] for r in texts] == ["1", "2"]
    group = parent.data.tags[tracking.RUN_GROUP_TAG]
    assert {r.data.tags[tracking.RUN_GROUP_TAG] for r in texts} == {group}
    assert [f.path for f in client.list_artifacts(first, "invocations")] == ["invocations/1.json", "invocations/2.json"]

    # another config is another parent, in the same run group (the folder's other outputs came from the first)
    other = tracking.start_workflow_run(results, {**config, "shard_size": 3})
    assert other != first and client.get_run(other).data.tags[tracking.RUN_GROUP_TAG] == group
    # a parent left RUNNING (a crash) is never attached to: the next invocation gets a new one
    crashed_again = tracking.start_workflow_run(results, {**config, "shard_size": 3})
    assert crashed_again not in (other, first)
    assert client.get_run(crashed_again).data.tags[tracking.RUN_GROUP_TAG] == group


def test_model_is_logged_with_a_signature_registered_and_loads_with_pyfunc(results, tmp_path):
    from panel2patch.model import build_model
    from panel2patch.model.mlflow_model import log_model

    torch.manual_seed(3)
    final = build_model("tiny").save_pretrained(tmp_path / "final")
    with tracking.stage_run("train", "tiny", {}, results):
        info = log_model(final, "panel2patch-tiny")
    assert info.registered_model_version == 1
    client_for(results)
    loaded = mlflow.pyfunc.load_model("models:/panel2patch-tiny/1")
    sig = loaded.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == ["text", "image"] and sig.outputs.inputs[0].shape == (-1, 64)

    texts = ["arrows mark the duct", "kidney section, H&E"]
    png = io.BytesIO()
    Image.new("RGB", (120, 80), (200, 30, 30)).save(png, "PNG")
    got = loaded.predict(pd.DataFrame({"text": [*texts, None], "image": [None, None, png.getvalue()]}))
    ours = build_model(None, init=f"path:{final}").eval()
    with torch.no_grad():
        want_t = ours.encode_text(ours.tokenizer()(texts)).numpy()
        want_i = ours.encode_image(ours.image_transform()(Image.open(png).convert("RGB"))[None]).numpy()
    assert got.dtype == np.float32 and got.shape == (3, 64)
    np.testing.assert_allclose(got[:2], want_t, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got[2:], want_i, atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="exactly one"):
        loaded.predict(pd.DataFrame({"text": ["both"], "image": [png.getvalue()]}))


def test_a_moved_results_folder_still_resolves_its_tables_and_model(results, tmp_path):
    from panel2patch.model import build_model
    from panel2patch.model.mlflow_model import log_model

    torch.manual_seed(3)
    final = build_model("tiny").save_pretrained(tmp_path / "final")
    tracking.start_workflow_run(results, {"inputs": ["x"]}, pd.DataFrame({"path": ["a.nxml"], "kind": ["jats"], "shard": ["s0"]}))
    with tracking.stage_run("train", "tiny", {}, results) as run:
        run.log_manifest(pd.DataFrame({"shard": ["train-000000.tar"], "sha256": ["ab" * 32]}), "corpus-shards", "training")
        log_model(final, "panel2patch-tiny")
    tracking.end_workflow_run(results, "FINISHED")

    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(results, moved.parent / "results")
    shutil.rmtree(results)
    assert tracking.main(["relocate", str(moved)]) == 0  # what the next workflow run also does by itself
    client = client_for(moved)
    exp = client.get_experiment_by_name("panel2patch")
    assert exp.artifact_location == (moved / "mlflow" / "artifacts").resolve().as_uri()
    train = client.get_run(run.run_id)
    assert train.info.artifact_uri.startswith(exp.artifact_location)
    assert table_of(train.inputs.dataset_inputs[0]).shard.tolist() == ["train-000000.tar"]
    loaded = mlflow.pyfunc.load_model("models:/panel2patch-tiny/1")
    assert loaded.predict(pd.DataFrame({"text": ["a duct"]})).shape == (1, 64)
    assert not results.exists()  # nothing was written at the old place
    assert tracking.relocate_store(moved) == {}  # idempotent


def test_artifact_location_is_configurable(results, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking.start_workflow_run(results, {"inputs": ["x"], "tracking": {"artifact_location": "store/artifacts"}})
    tracking.end_workflow_run(results)
    exp = client_for(results).get_experiment_by_name("panel2patch")
    assert exp.artifact_location == (tmp_path / "store" / "artifacts").as_uri()
    assert tracking.ARTIFACTS_TAG not in exp.tags  # not re-pointed when results/ moves
    assert any((tmp_path / "store" / "artifacts").rglob("config.json"))
