"""Synthetic compound figures and the learned panel detector (tiny, CPU-only training runs)."""

from __future__ import annotations

import hashlib
import json

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from panel2patch import tracking
from panel2patch.layout import detector as D
from panel2patch.layout import synthetic as S

torch.set_num_threads(1)

# mid-tone colours: never the background (black or >= 246 grey) nor a letter colour
COLOURS = [(60 + 37 * i % 140, 80 + 53 * i % 120, 70 + 29 * i % 130) for i in range(12)]


@pytest.fixture(scope="module")
def solid_sources():
    """Flat-coloured "charts" of varied shapes: every content pixel is its source's colour."""
    return S.Sources([S.Source(Image.new("RGB", (40 + 23 * i, 30 + 17 * (11 - i)), c), "chart", "solid")
                      for i, c in enumerate(COLOURS)])


def _near(a: np.ndarray, colour, tol: int) -> np.ndarray:
    return (np.abs(a.astype(int) - np.asarray(colour)) <= tol).all(-1)


def test_generator_is_deterministic(solid_sources):
    for i in range(5):
        a, ta = S.make_figure(S.figure_rng(3, i), solid_sources)
        b, tb = S.make_figure(S.figure_rng(3, i), solid_sources)
        assert a.tobytes() == b.tobytes() and ta == tb
    c, _ = S.make_figure(S.figure_rng(4, 0), solid_sources)
    assert c.tobytes() != S.make_figure(S.figure_rng(3, 0), solid_sources)[0].tobytes()


def test_boxes_are_the_content_and_gutters_are_background(solid_sources):
    checked = letters_outside = 0
    for i in range(60):
        img, t = S.make_figure(S.figure_rng(11, i), solid_sources)
        if "jpeg_quality" in t["style"]:
            continue  # JPEG blurs edges; exact pixel checks only on lossless figures
        a = np.asarray(img)
        H, W = a.shape[:2]
        bg = t["style"]["background"]
        covered = np.zeros((H, W), bool)
        ink = np.zeros((H, W), bool)
        for lb in t["labels"]:
            x1, y1, x2, y2 = lb["bbox"]
            ink[y1:y2, x1:x2] = True
        for p in t["panels"]:
            x1, y1, x2, y2 = p["bbox"]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            covered[y1:y2, x1:x2] = True
            for (sx1, sy1, sx2, sy2) in p["subpanels"] or [p["bbox"]]:
                region = a[sy1:sy2, sx1:sx2]
                inner = region[2:-2, 2:-2][~ink[sy1:sy2, sx1:sx2][2:-2, 2:-2]]  # within borders, letters aside
                colour = np.median(inner.reshape(-1, 3), 0)
                assert min(np.abs(colour - np.asarray(c)).max() for c in COLOURS) <= 1, "panel is not its source"
                assert _near(inner, colour, 1).mean() > 0.95
                # tight: every edge row/column of the box is mostly content, not background
                for edge in (region[0], region[-1], region[:, 0], region[:, -1]):
                    assert not _near(edge, bg, 0).mean() > 0.5
        for lb in t["labels"]:
            x1, y1, x2, y2 = lb["bbox"]
            assert 0 <= x1 < x2 <= W and 0 <= y1 < y2 <= H
            assert lb["char"] in lb["text"] and t["panels"][lb["panel"]]["label"] == lb["char"]
            covered[y1:y2, x1:x2] = True
            px1, py1, px2, py2 = t["panels"][lb["panel"]]["bbox"]
            if not (px1 <= x1 and py1 <= y1 and x2 <= px2 and y2 <= py2):  # printed outside its panel
                letters_outside += 1
                assert not _near(a[y1:y2, x1:x2], bg, 0).all(), "letter box holds no ink"
                ring = np.concatenate([a[max(0, y1 - 1), x1:x2], a[min(H - 1, y2), x1:x2], a[y1:y2, max(0, x1 - 1)], a[y1:y2, min(W - 1, x2)]])
                assert _near(ring, bg, 40).all(), "letter box is not tight"
        for o in t["other"]:
            x1, y1, x2, y2 = o["bbox"]
            covered[y1:y2, x1:x2] = True
        assert _near(a[~covered], bg, 0).all(), "something drawn outside the boxes"
        checked += 1
    assert checked >= 20 and letters_outside >= 5


def test_dataset_items_are_detection_targets(solid_sources):
    ds = S.SyntheticFigures(solid_sources, 6, seed=1, max_side=200)
    for i in range(len(ds)):
        x, t = ds[i]
        img, tgt = ds.figure(i)
        s = min(1.0, 200 / max(img.size))
        assert x.shape[0] == 3 and max(x.shape[1:]) <= 200 and 0 <= float(x.min()) and float(x.max()) <= 1
        assert t["boxes"].shape == (len(tgt["panels"]) + len(tgt["labels"]), 4)
        assert torch.equal(t["labels"], torch.tensor([S.PANEL] * len(tgt["panels"]) + [S.LABEL] * len(tgt["labels"])))
        if tgt["panels"]:
            assert torch.allclose(t["boxes"][0], torch.tensor(tgt["panels"][0]["bbox"], dtype=torch.float32) * s)


def test_coco_export(tmp_path, solid_sources):
    path = S.write_coco(tmp_path, solid_sources, 3, seed=2)
    coco = json.loads(path.read_text())
    assert len(coco["images"]) == 3 and all((tmp_path / im["file_name"]).exists() for im in coco["images"])
    assert {c["name"] for c in coco["categories"]} == {"panel", "label"}
    labels = [a for a in coco["annotations"] if a["category_id"] == S.LABEL]
    assert all(a["attributes"]["char"] for a in labels)


def test_real_sources_exclude_the_dev_set(shared_data):
    src = S.build_sources({"vqa_rad": str(shared_data / "vqa-rad"), "exsclaim": str(shared_data / "panels-gt" / "exsclaim-naturecomms"),
                           "limit": 5, "charts": 2, "diagrams": 1, "textures": 3}, seed=0)
    summary = src.summary()
    assert summary["vqa-rad"] == 5 and summary["exsclaim"] == 5
    assert not any(k.startswith("panel-gt") for k in summary)
    img, t = S.make_figure(S.figure_rng(0, 0), src)
    assert img.mode == "RGB" and t["panels"]


# ----------------------------------------------------------------------------- training

TINY = {"n_images": 2, "epochs": 12, "batch_size": 2, "image_size": 192, "lr": 0.001, "warmup_steps": 2,
        "checkpoint_every": 2, "seed": 5, "sources": {"charts": 3, "diagrams": 1, "textures": 6}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv(tracking.PARENT_ENV, raising=False)
        root = tmp_path_factory.mktemp("detector")
        out = root / "models" / "panel_detector.pt"
        meta = D.train_detector(TINY, out, progress=False, results_dir=root / "results")
        yield root, out, meta


def test_tiny_training_learns_and_writes_a_versioned_artifact(trained):
    root, out, meta = trained
    side = out.with_suffix(".json")
    assert out.exists() and side.exists() and not out.with_name(out.name + ".ckpt").exists()
    assert json.loads(side.read_text()) == json.loads(json.dumps(meta, default=str))
    assert meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["torchvision"] == __import__("torchvision").__version__ and meta["seed"] == 5
    assert meta["config"]["n_images"] == 2 and meta["steps"] == 12
    assert meta["loss_last"] < meta["loss_first"]
    model = D.load_detector(out)
    assert not model.training and model.p2p_meta["sha256"] == meta["sha256"]
    # MLflow: params, per-step losses, the weights as an artifact
    mlflow.set_tracking_uri(f"sqlite:///{(root / 'results').resolve()}/mlflow/mlflow.db")
    run = mlflow.search_runs(experiment_names=["panel2patch"], output_format="list",
                             filter_string="attributes.run_name = 'train_detector:panel_detector'")[0]
    assert run.info.run_id == meta["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.params["n_images"] == "2" and run.data.tags["detector.sha256"] == meta["sha256"]
    losses = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "loss")
    assert len(losses) == 12
    arts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert arts == {"model/panel_detector.pt", "model/panel_detector.json"}


def test_changed_weights_are_refused(trained, tmp_path):
    _, out, _ = trained
    bad = tmp_path / "panel_detector.pt"
    data = bytearray(out.read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    bad.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    with pytest.raises(ValueError, match="sha256"):
        D.load_detector(bad)


def test_interrupted_training_resumes_to_the_same_weights(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    _, ref, _ = trained
    out = tmp_path / "panel_detector.pt"
    real = S.SyntheticFigures.__getitem__
    calls = {"n": 0}

    def flaky(self, i):
        calls["n"] += 1
        if calls["n"] == 7:  # during step 4, after the step-2 checkpoint
            raise RuntimeError("node lost")
        return real(self, i)

    monkeypatch.setattr(S.SyntheticFigures, "__getitem__", flaky)
    with pytest.raises(RuntimeError, match="node lost"):
        D.train_detector(TINY, out, progress=False, results_dir=tmp_path / "results")
    ckpt = out.with_name(out.name + ".ckpt")
    assert ckpt.exists() and not out.exists()
    assert torch.load(ckpt, weights_only=False)["step"] == 2
    monkeypatch.setattr(S.SyntheticFigures, "__getitem__", real)
    D.train_detector(TINY, out, progress=False, results_dir=tmp_path / "results")
    a = torch.load(out, weights_only=True)["state_dict"]
    b = torch.load(ref, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_copied_in_checkpoint_cannot_run_code(tmp_path, monkeypatch):
    import pickle

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)
    out = tmp_path / "panel_detector.pt"
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return open, (str(marker), "w")

    torch.save({"config_hash": "x", "step": 2, "history": [Evil()]}, out.with_name(out.name + ".ckpt"))
    with pytest.raises(pickle.UnpicklingError):
        D.train_detector(TINY, out, progress=False, results_dir=tmp_path / "results")
    assert not marker.exists() and not out.exists()


def test_detect_returns_boxes_in_original_pixels(trained):
    _, out, _ = trained
    model = D.load_detector(out)
    model.roi_heads.score_thresh = 0.0  # a 12-step model is unsure of everything: keep all boxes
    img, _ = S.make_figure(S.figure_rng(9, 1), S.build_sources({"charts": 2, "diagrams": 1, "textures": 4}, 0))
    small = img.resize((192, 96))                          # the network's own size: no resize inside
    big = small.resize((384, 192), Image.NEAREST)          # 2x: the network sees exactly `small`
    p1 = D.detect_panels(model, small, score_threshold=0.0)
    p2 = D.detect_panels(model, np.asarray(big), score_threshold=0.0)
    assert p1 and len(p1) == len(p2)
    b1 = torch.tensor([p["bbox"] for p in p1])
    b2 = torch.tensor([p["bbox"] for p in p2])
    assert torch.allclose(b2, 2 * b1, atol=0.3)
    assert float(b2[:, 2].max()) > 192 or float(b2[:, 3].max()) > 96  # some box lies beyond the small image
    assert all(set(p) == {"bbox", "score"} for p in p2) and p2 == sorted(p2, key=lambda p: -p["score"])
    both = D.detect(model, big, score_threshold=0.0)
    assert set(both) == {"panels", "labels"}


# ----------------------------------------------------------------------------- the layout stage


def test_layout_stage_runs_detector_and_combined_methods(trained, tmp_path):
    """``layout.method`` detector / combined load the trained weights through the stage; on a figure
    with clean gutters ``combined`` gives exactly the splitter's panels (gutters come first)."""
    import pandas as pd

    from panel2patch.layout.cli import main as panels_main
    from panel2patch.layout.stage import run_layout_shard
    from test_layout import _grid_figure

    _, weights, meta = trained
    ingest = tmp_path / "results" / "shard-000" / "ingest"
    (ingest / "images").mkdir(parents=True)
    img, truth = _grid_figure(np.random.default_rng(7), letters="AB", cols=2, rows=1)
    img.save(ingest / "images" / "a__f1.png")
    pd.DataFrame({"figure_id": ["a__f1"], "image_path": ["images/a__f1.png"], "image_sha256": ["x"]}) \
        .to_parquet(ingest / "figures.parquet")
    tables = {}
    for method in ("splitter", "combined", "detector"):
        out = tmp_path / "results" / "shard-000" / f"layout-{method}"
        stats = run_layout_shard(ingest / "figures.parquet", ingest, out, "shard-000", results_dir=tmp_path / "results",
                                 cfg={"method": method, "detector_weights": None if method == "splitter" else str(weights)})
        assert stats["figures"] == 1 and stats["skips"] == 0 and stats["panels"] >= 1
        tables[method] = pd.read_parquet(out / "panels.parquet")
    cols = ["panel_index", "label", "kind", "score", "method"]
    assert tables["combined"][cols].equals(tables["splitter"][cols])
    assert tables["combined"]["bbox"].map(list).tolist() == tables["splitter"]["bbox"].map(list).tolist()
    assert tables["splitter"]["label"].tolist() == ["A", "B"]
    mlflow.set_tracking_uri(f"sqlite:///{(tmp_path / 'results').resolve()}/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["panel2patch"], output_format="list",
                              filter_string="attributes.run_name = 'layout:shard-000'")
    assert sorted(r.data.params["layout.method"] for r in runs) == ["combined", "detector", "splitter"]
    assert {r.data.tags.get("detector.sha256") for r in runs if r.data.params["layout.method"] != "splitter"} == {meta["sha256"]}
    # the CLI refuses detector methods without weights (exit 2), before reading any image
    ns = type("A", (), {"method": "combined", "detector_weights": None, "images": [], "out_path": "-"})()
    assert panels_main(ns) == 2
    with pytest.raises(ValueError, match="needs detector weights"):
        run_layout_shard(ingest / "figures.parquet", ingest, tmp_path / "x", "shard-000", results_dir=tmp_path / "results",
                         cfg={"method": "combined"})
