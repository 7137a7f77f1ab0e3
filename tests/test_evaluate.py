"""The evaluation stage (panel2patch.evaluate, ``panel2patch evaluate``): real models, real data.

A tiny model is trained for real (one process, plain torch, CPU, ~40 s) on synthetic shards cut
from the bundled eLife figures (panel2patch.train.data.write_synthetic_shards: real format, patch
boxes included), then evaluated with the real open_clip loader, clip_benchmark, scikit-learn and an
MLflow SQLite store; VQA-RAD is the vendored subset in resources/vqa-rad (and the full set in
../shared/data when present).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panel2patch.evaluate import datasets as D
from panel2patch.evaluate import models as M
from panel2patch.evaluate.run import evaluate, log_to_mlflow
from panel2patch.train.data import write_synthetic_shards

REPO = Path(__file__).resolve().parents[1]
VQA = REPO / "resources" / "vqa-rad"
TINY = REPO / "config" / "train" / "tiny.yaml"


def _env(tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "P2P_MLFLOW_PARENT": "",
                "PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])})
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """Synthetic shards (val copied as test) and a tiny model trained on their train split."""
    tmp = tmp_path_factory.mktemp("eval")
    shards = tmp / "shards"
    sizes = write_synthetic_shards(shards, n_figures=24, seed=0, figures_per_shard=4)
    for name in [n for n in sizes if n.startswith("val-")]:
        shutil.copy(shards / name, shards / name.replace("val-", "test-"))
        sizes[name.replace("val-", "test-")] = sizes[name]
    (shards / "sizes.json").write_text(json.dumps(sizes))
    out = tmp / "run"
    cmd = [sys.executable, "-m", "panel2patch.train.main", "--config", str(TINY), "--data", str(shards),
           "--output-dir", str(out), "--no-deepspeed", "--set", "max_steps=40", "--set", "epochs=100",
           "--set", "micro_batch=16", "--set", "checkpoint_every=0", "--set", "eval_every_epoch=false",
           "--set", "mlflow.enabled=false", "--set", "threads=1"]
    res = subprocess.run(cmd, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    return {"tmp": tmp, "shards": shards, "final": out / "final", "result": json.loads((out / "result.json").read_text())}


def _row(result, benchmark, data, metric):
    [row] = [r for r in result["rows"] if (r["benchmark"], r["data"], r["metric"]) == (benchmark, data, metric)]
    return row


# --------------------------------------------------------------------------------- data
def test_vqa_rad_sets_split_by_image_and_read_modality_from_the_questions(tmp_path):
    organ, modality = D.vqa_rad_organ(VQA), D.vqa_rad_modality(VQA)
    assert organ.classnames == ["chest", "abdomen", "head"] and len(organ.test) == 15 and len(organ.train) == 15
    assert sorted(np.bincount([y for _, y in organ.test])) == [5, 5, 5]
    assert modality.classnames == ["CT scan", "MRI scan", "X-ray radiograph"] and modality.test and modality.train
    assert D.modality_of("What type of imaging is this?", "MRI Diffusion Weighted") == "MRI"
    assert D.modality_of("Is this a CT image?", "yes") == "CT" and D.modality_of("Is this a CT image?", "no") is None
    assert D.modality_of("What type of imaging does this not represent?", "ultrasound") is None
    assert D.modality_of("Is this an MRI or a CT scan?", "yes") is None
    assert D.modality_of("What kind of image is this?", "Chest x-ray") == "X-ray"
    yesno = D.vqa_rad_yesno(VQA)
    assert {y for *_, y in yesno.train} == {0, 1} and len(yesno.test) == 15
    # the data digest follows the files: one changed answer changes it
    copy = tmp_path / "vqa"
    shutil.copytree(VQA, copy)
    assert D.vqa_rad_organ(copy).sha256 == organ.sha256
    qa = json.loads((copy / "testset.json").read_text())
    qa[0]["answer"] = "no" if str(qa[0]["answer"]).lower() == "yes" else "yes"
    (copy / "testset.json").write_text(json.dumps(qa))
    assert D.vqa_rad_organ(copy).sha256 != organ.sha256


def test_full_vqa_rad_set_when_present(shared_data):
    organ = D.vqa_rad_organ(shared_data / "vqa-rad")
    assert len(organ.test) == 203 and len(organ.train) == 111  # test images of testset.json; the others train
    modality = D.vqa_rad_modality(shared_data / "vqa-rad")
    assert len(modality.test) + len(modality.train) >= 80


# ----------------------------------------------------------------------- models + clip_benchmark
def test_clip_benchmark_on_our_export_agrees_with_the_trainers_recall(trained):
    """clip_benchmark's retrieval and zero-shot classifier run on the export loaded by open_clip,
    and its recall equals the trainer's own recall_at_k on the same embeddings."""
    from clip_benchmark.metrics import zeroshot_classification as zc

    from panel2patch.evaluate.retrieval import recall
    from panel2patch.train.evaluate import recall_at_k

    m = M.load(str(trained["final"]))
    assert m.digest == trained["result"]["weights_sha256"]  # the model digest is the trained weights' sha256
    pairs = D.corpus_pairs(trained["shards"], "test").by_level()["panel"]
    ours = recall_at_k(m.encode_images([p.image for p in pairs]), m.encode_texts([p.text for p in pairs]))
    theirs = recall(m, pairs)
    for k in ("i2t_r1", "t2i_r1", "i2t_r5", "t2i_r5", "i2t_r10", "t2i_r10"):
        assert theirs[k] == pytest.approx(ours[k], abs=1e-6), k
    w = zc.zero_shot_classifier(m.model, m.tokenizer, ["chest", "head"], ["a scan of the {c}."], "cpu", amp=False)
    assert w.shape == (64, 2) and torch.allclose(w.norm(dim=0), torch.ones(2), atol=1e-5)


def test_untrained_baseline_is_the_trainers_step_zero_model(trained, tmp_path):
    from panel2patch.model.clip import build_model

    base = M.untrained(str(trained["final"]), tmp_path / "untrained")
    assert base.info["seed"] == 0 and base.info["run_init"] == "random"
    torch.manual_seed(0)
    ref = build_model("tiny", init="random").eval()
    ids = base.tokenizer(["red nuclei in sample 3."])
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(base.model.encode_image(x, normalize=True), ref.encode_image(x), atol=1e-6)
        assert torch.allclose(base.model.encode_text(ids, normalize=True), ref.encode_text(ids), atol=1e-6)
    assert base.digest != M.load(str(trained["final"])).digest


# ------------------------------------------------------------------------------ benchmarks
def test_trained_model_beats_its_untrained_baseline_on_its_own_train_pairs(trained, tmp_path):
    result = evaluate([str(trained["final"])], tmp_path / "ev", trained["shards"], split="train",
                      benchmarks=["retrieval", "grounding", "perturbed"], vqa_rad=None)
    assert not result["failed"] and result["columns"][:3] == ["model", "untrained", "chance"]
    for level in ("figure", "panel"):
        for metric in ("i2t R@5", "t2i R@5"):
            row = _row(result, "retrieval", f"corpus-train/{level}", metric)
            assert row["values"]["model"] > row["values"]["untrained"] + 0.1, row
            assert row["values"]["model"] > row["values"]["chance"], row
    g = _row(result, "grounding", "corpus-train", "pointing acc")
    assert g["n"] == sum(1 for p in D.corpus_pairs(trained["shards"], "train").pairs if p.level == "patch")
    assert g["values"]["chance"] == pytest.approx(0.2)  # the patch + 4 corner windows (IoU < 0.3 with it)
    p = _row(result, "perturbed", "corpus-train/panel", "pick original of 4")
    assert p["values"]["chance"] == 0.25 and 0 <= p["values"]["model"] <= 1
    md = (tmp_path / "ev" / "evaluation.md").read_text()
    assert "| retrieval | corpus-train/figure | i2t R@1 |" in md and "Seconds: load models" in md
    _assert_items_average_to_values(result)


def _assert_items_average_to_values(result):
    """Every row holds per-item outcomes (for paired comparisons, panel2patch.evaluate.ablation)
    of every model column, one per test item, that give the row's value."""
    from panel2patch.evaluate.ablation import statistic

    for r in result["rows"]:
        models = [m["label"] for m in result["models"]]
        assert set(r["items"]) == set(models), r["metric"]
        for label in models:
            items = r["items"][label]
            assert len(items) == r["n"] and all(0 <= x <= 1 for x in items), (r["benchmark"], r["metric"])
            assert statistic(items, r.get("item_classes")) == pytest.approx(r["values"][label], abs=1e-5), \
                (r["benchmark"], r["data"], r["metric"], label)
        assert ("item_classes" in r) == (r["metric"] == "balanced acc")


def test_classification_benchmarks_with_every_reference(trained, tmp_path):
    result = evaluate([str(trained["final"])], tmp_path / "ev", None, benchmarks=["zeroshot", "probe", "vqa"],
                      vqa_rad=str(VQA))
    assert not result["failed"] and not result["skipped"]
    for bench in ("zeroshot", "probe"):
        for data in ("vqa-rad-organ", "vqa-rad-modality"):
            row = _row(result, bench, data, "acc")
            assert {"model", "untrained", "chance", "majority"} <= set(row["values"])
            assert row["values"]["chance"] == pytest.approx(1 / 3)
    assert "pixels" in _row(result, "probe", "vqa-rad-organ", "acc")["values"]
    vqa = _row(result, "vqa", "vqa-rad-yesno", "yes-no acc")
    assert {"model", "untrained", "chance", "majority", "text-only"} <= set(vqa["values"]) and vqa["n"] == 15
    assert result["data"]["vqa-rad-organ"]["sha256"] == D.vqa_rad_organ(VQA).sha256
    _assert_items_average_to_values(result)


def test_user_sets_csv_pairs_image_folder_and_medmnist_npz(trained, tmp_path):
    from PIL import Image

    organ = D.vqa_rad_organ(VQA)
    # an image folder with train/ and test/, a MedMNIST-style .npz (with and without class names), CSV pairs
    folder = tmp_path / "organs"
    for split, items in (("train", organ.train), ("test", organ.test)):
        for i, (im, y) in enumerate(items):
            (folder / split / organ.classnames[y]).mkdir(parents=True, exist_ok=True)
            im.save(folder / split / organ.classnames[y] / f"{i}.png")
    arr = {f"{s}_images": np.stack([np.asarray(im.convert("L").resize((28, 28))) for im, _ in items])
           for s, items in (("train", organ.train), ("test", organ.test))}
    arr.update({f"{s}_labels": np.array([[y] for _, y in items]) for s, items in (("train", organ.train), ("test", organ.test))})
    np.savez(tmp_path / "organmnist.npz", **arr)
    (tmp_path / "organmnist.json").write_text(json.dumps({"label": {"0": "chest", "1": "abdomen", "2": "head"}}))
    np.savez(tmp_path / "nonames.npz", **arr)
    pairs = [p for p in D.corpus_pairs(trained["shards"], "test").pairs if p.level == "figure"]
    (tmp_path / "imgs").mkdir()
    with open(tmp_path / "pairs.csv", "w") as fh:
        fh.write("image,text\n")
        for i, p in enumerate(pairs):
            p.image.save(tmp_path / "imgs" / f"{i}.jpg")
            fh.write(f"imgs/{i}.jpg,\"{p.text}\"\n")
    result = evaluate([str(trained["final"])], tmp_path / "ev", None, benchmarks=["retrieval", "zeroshot", "probe"],
                      datasets=[str(folder), str(tmp_path / "organmnist.npz"), str(tmp_path / "nonames.npz")],
                      pairs=[str(tmp_path / "pairs.csv")])
    assert not result["failed"]
    assert _row(result, "zeroshot", "organs", "acc")["n"] == 15 and _row(result, "probe", "organmnist", "acc")["n"] == 15
    assert _row(result, "zeroshot", "organmnist", "acc")["values"]["chance"] == pytest.approx(1 / 3)
    assert [s for s in result["skipped"] if s["data"] == "nonames"][0]["reason"].startswith("no class names")
    assert _row(result, "probe", "nonames", "acc")
    assert _row(result, "retrieval", "pairs/pair", "i2t R@1")["n"] == len(pairs)


# ------------------------------------------------------------------------- CLI and MLflow
def _cli(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "panel2patch.cli", "evaluate", *args], cwd=cwd, env=_env(cwd),
                          capture_output=True, text=True, timeout=600)


def test_cli_writes_the_table_and_logs_every_metric_and_data_sha256_to_mlflow(trained, tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "ev"
    res = _cli(str(trained["final"]), "--corpus", str(trained["shards"]), "--vqa-rad", str(VQA), "--out", str(out),
               "--benchmarks", "retrieval,zeroshot,probe", "--mlflow", "--results-dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| retrieval | corpus-test/panel | i2t R@1 |" in res.stdout and "| model | untrained | chance |" in res.stdout
    result = json.loads((out / "evaluation.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               "tags.`panel2patch.stage` = 'evaluate'")
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate:ev"
    n_values = sum(len(r["values"]) for r in result["rows"])
    assert len([k for k in run.data.metrics if not k.startswith("seconds/")]) == n_values
    assert run.data.metrics["retrieval/corpus-test/panel/i2t_r1/untrained"] == \
        _row(result, "retrieval", "corpus-test/panel", "i2t R@1")["values"]["untrained"]
    assert run.data.tags["model.model.digest"] == trained["result"]["weights_sha256"]
    for name in ("corpus-test", "vqa-rad-organ", "vqa-rad-modality"):
        assert run.data.tags[f"data.{name}.sha256"] == result["data"][name]["sha256"]
    tars = sorted(trained["shards"].glob("test-*.tar"))
    assert run.data.tags["data.corpus-test.sha256"] == D.digest_files(tars, trained["shards"])
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["evaluation-data"]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"evaluation.json", "evaluation.md"}


def test_bad_inputs_are_clear_errors_with_exit_codes(trained, tmp_path):
    final = str(trained["final"])
    res = _cli(str(tmp_path / "nope"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2 and "no such model folder" in res.stderr and "Traceback" not in res.stderr
    res = _cli(final, "--out", str(tmp_path / "o"), "--benchmarks", "retrieval,accuracy", cwd=tmp_path)
    assert res.returncode == 2 and "unknown benchmark(s) accuracy" in res.stderr
    res = _cli(final, "--out", str(tmp_path / "o"), "--vqa-rad", str(tmp_path / "missing"), cwd=tmp_path)
    assert res.returncode == 2 and "--vqa-rad" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    res = _cli(str(tmp_path / "empty"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert res.returncode == 2 and "open_clip_config.json" in res.stderr
    # unreadable benchmark data: that benchmark fails (exit 1), the others are still written
    broken = tmp_path / "vqa"
    shutil.copytree(VQA, broken)
    (broken / "testset.json").write_text("[{not json")
    res = _cli(final, "--out", str(tmp_path / "o"), "--corpus", str(trained["shards"]), "--vqa-rad", str(broken),
               "--benchmarks", "retrieval,zeroshot", cwd=tmp_path)
    assert res.returncode == 1 and "zeroshot" in res.stderr, res.stderr[-2000:]
    result = json.loads((tmp_path / "o" / "evaluation.json").read_text())
    assert [f["benchmark"] for f in result["failed"]] == ["zeroshot"] and {r["benchmark"] for r in result["rows"]} == {"retrieval"}
