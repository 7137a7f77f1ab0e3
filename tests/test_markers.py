"""Visual markers: detection on drawn overlays, exclusions, patches, CLI, real dev-set floor."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
from PIL import Image

from panel2patch.markers.detect import detect_markers, figure_markers, iou
from panel2patch.markers.patches import marker_patches
from panel2patch.markers.synthetic import draw_arrow, draw_arrowhead, draw_asterisk, draw_text


def grey_image(h=320, w=360, seed=0, level=110, spread=60):
    """A smooth grey-scale 'radiograph': blurred noise blobs plus fine noise."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 12)
    base = (base - base.mean()) / (base.std() + 1e-6)
    g = np.clip(level + spread * base + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _one(markers, box, typ):
    hits = [m for m in markers if iou(m["bbox"], box) >= 0.5]
    assert hits, f"no marker at {box}: {markers}"
    assert hits[0]["type"] == typ
    return hits[0]


def test_red_arrow_on_grey_image():
    img = grey_image()
    tip = (200.0, 150.0)
    box = draw_arrow(img, tip, math.radians(30), 60, 6, 18, 16, (230, 30, 30))
    found = detect_markers(img)
    m = _one(found, box, "arrow")
    assert m["colour"] == "red"
    assert math.hypot(m["tip"][0] - tip[0], m["tip"][1] - tip[1]) <= 4
    d = m["direction"]
    assert d[0] * math.cos(math.radians(30)) + d[1] * math.sin(math.radians(30)) > 0.9
    assert len(found) == 1


def test_white_arrowhead_on_grey_image():
    img = grey_image(seed=1, level=90, spread=40)
    tip = (120.0, 200.0)
    box = draw_arrowhead(img, tip, math.radians(-100), 32, 22, (255, 255, 255))
    found = detect_markers(img)
    m = _one(found, box, "arrowhead")
    assert m["colour"] == "white"
    assert math.hypot(m["tip"][0] - tip[0], m["tip"][1] - tip[1]) <= 4
    assert len(found) == 1


def test_black_asterisk_on_grey_image():
    img = grey_image(seed=2, level=170, spread=35)
    box = draw_asterisk(img, (250, 100), 16, 6, 4, 0.3, (0, 0, 0))
    found = detect_markers(img)
    m = _one(found, box, "asterisk")
    assert m["colour"] == "black"
    assert m["tip"] is None
    assert len(found) == 1


def test_letters_and_scale_bars_are_not_markers():
    img = grey_image(seed=3)
    for k, (x, y) in enumerate([(20, 40), (150, 60), (260, 250)]):
        draw_text(img, (x, y), "ABL"[k], 1.2, (255, 255, 255), 3)
    draw_text(img, (40, 280), "10 um", 0.7, (250, 230, 40), 2)
    img[300:306, 220:320] = 255  # scale bar
    assert detect_markers(img) == []
    # a lone printed letter shaped like an arrowhead, excluded by its label box
    img2 = grey_image(seed=4)
    box = draw_arrowhead(img2, (30, 20), math.radians(-90), 16, 14, (255, 255, 255))
    assert detect_markers(img2, exclude=[box]) == []


def test_patch_lies_ahead_of_the_tip():
    marker = {"type": "arrow", "bbox": [100, 100, 140, 120], "tip": [140.0, 110.0], "direction": [1.0, 0.0],
              "score": 0.9}
    panel = [0, 0, 400, 300]
    (p,) = marker_patches([marker], panel)
    x1, y1, x2, y2 = p["bbox"]
    assert p["marker_indices"] == [0]
    assert (x1 + x2) / 2 > 140 and x1 <= 140 < x2 and y1 <= 110 < y2
    assert 0 <= x1 < x2 <= 400 and 0 <= y1 < y2 <= 300
    # pointing up-left near the panel corner: clipped to the panel
    m2 = {**marker, "tip": [10.0, 8.0], "direction": [-0.7, -0.7]}
    (p2,) = marker_patches([m2], panel)
    assert p2["bbox"][0] == 0 and p2["bbox"][1] == 0
    # an asterisk gets a box around itself
    star = {"type": "asterisk", "bbox": [200, 150, 220, 170], "tip": None, "direction": None, "score": 0.8}
    (p3,) = marker_patches([star], panel)
    assert p3["bbox"][0] < 200 and p3["bbox"][2] > 220


def test_caption_boxes_merge_with_tau_and_nms():
    marker = {"type": "arrow", "bbox": [100, 100, 140, 120], "tip": [140.0, 110.0], "direction": [1.0, 0.0],
              "score": 0.9}
    panel = [0, 0, 400, 300]
    near = [150, 90, 200, 130]       # centre 25 px from the tip: kept
    far = [330, 230, 390, 290]       # far from every marker: dropped
    out = marker_patches([marker], panel, caption_boxes=[near, far])
    srcs = sorted(p["source"] for p in out)
    assert "caption" in srcs and all(p["bbox"] != far for p in out)
    assert all(p["marker_indices"] == [0] for p in out)
    out_tight = marker_patches([marker], panel, {"tau": 0.01}, caption_boxes=[near])
    assert [p["source"] for p in out_tight] == ["marker"]


def test_figure_markers_on_a_two_panel_figure():
    left, right = grey_image(240, 240, seed=5), grey_image(240, 240, seed=6)
    box = draw_arrow(right, (120, 120), math.radians(200), 50, 5, 16, 14, (250, 230, 40))
    fig = np.full((260, 520, 3), 255, np.uint8)
    fig[10:250, 10:250] = left
    fig[10:250, 270:510] = right
    res = figure_markers(fig)
    shifted = [box[0] + 270, box[1] + 10, box[2] + 270, box[3] + 10]
    assert any(iou(m["bbox"], shifted) >= 0.5 for m in res["markers"])
    assert res["patches"] and all(p["marker_indices"] for p in res["patches"])


def test_cli_round_trip_and_bad_image(tmp_path):
    img = grey_image(seed=7)
    box = draw_arrow(img, (220, 160), math.radians(135), 55, 6, 18, 15, (40, 200, 60))
    good = tmp_path / "good.png"
    Image.fromarray(img).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "m.jsonl"
    r = subprocess.run([sys.executable, "-m", "panel2patch.cli", "markers", str(good), str(bad), "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr  # one image failed, the other's record is written
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["image"] for x in recs] == [str(good), str(bad)]
    g, b = recs
    assert "error" not in g and set(g) == {"image", "markers", "patches"}
    m = [m for m in g["markers"] if iou(m["bbox"], box) >= 0.5]
    assert m and m[0]["type"] == "arrow" and m[0]["colour"] == "green" and len(m[0]["tip"]) == 2
    assert set(m[0]) == {"type", "bbox", "colour", "tip", "score"}
    assert g["patches"] and all(set(p) == {"bbox", "marker_indices"} for p in g["patches"])
    assert b["error"] and b["markers"] == [] and b["patches"] == []


def test_dev_set_floor(shared_data):
    gt_dir = shared_data / "panels-gt" / "hand-labelled-dev"
    recs = json.loads((gt_dir / "annotations.json").read_text())
    tp = fp = n_gt = 0
    for r in recs:
        gts = [m["bbox"] for m in r.get("markers") or []]
        ignore = [m["bbox"] for m in r.get("markers_non_image") or []]
        res = figure_markers(gt_dir / "images" / r["image"])
        used = set()
        for m in res["markers"]:
            j = max(range(len(gts)), key=lambda j: iou(m["bbox"], gts[j]), default=None)
            if j is not None and j not in used and iou(m["bbox"], gts[j]) >= 0.3:
                used.add(j)
                tp += 1
            elif not any(iou(m["bbox"], b) >= 0.3 for b in ignore):
                fp += 1
        n_gt += len(gts)
    assert n_gt >= 5
    recall, precision = tp / n_gt, tp / max(1, tp + fp)
    # measured 1.0 / 0.89 on the 18-figure dev subset (8 markers); floors leave some slack
    assert recall >= 0.85, (tp, n_gt)
    assert precision >= 0.7, (tp, fp)


def test_markers_stage_pairs_patches_with_caption_phrases(tmp_path):
    import pandas as pd
    from PIL import Image

    from panel2patch.ingest.tables import write_table
    from panel2patch.markers.stage import PATCHES, run_markers_shard
    from panel2patch.text.stage import MARKERS as PHRASES

    ingest = tmp_path / "ingest"
    (ingest / "images").mkdir(parents=True)
    img = grey_image()
    draw_arrow(img, (200.0, 150.0), math.radians(30), 60, 6, 18, 16, (230, 30, 30))
    Image.fromarray(img).save(ingest / "images" / "f1.png")
    pd.DataFrame({"figure_id": ["f1", "f2"], "image_path": ["images/f1.png", "images/f2.png"]}).to_parquet(
        ingest / "figures.parquet")
    (ingest / "images" / "f2.png").write_bytes(b"not a png")
    pd.DataFrame({"figure_id": ["f1", "f2"], "panel_index": [0, 0], "bbox": [[0, 0, 360, 320]] * 2,
                  "label": ["A", None], "label_bbox": [None, None], "kind": ["image", "image"]}).to_parquet(
        tmp_path / "panels.parquet")
    write_table([{"figure_id": "f1", "marker_index": 0, "type": "arrow", "colour": "red", "count": 1,
                  "labels": ["A"], "phrase": "the lesion"},
                 {"figure_id": "f1", "marker_index": 1, "type": "asterisk", "colour": None, "count": None,
                  "labels": [], "phrase": "the vessel"}], PHRASES, tmp_path / "phrases.parquet")
    stats = run_markers_shard(ingest / "figures.parquet", tmp_path / "panels.parquet", tmp_path / "phrases.parquet",
                              tmp_path / "out", "manual", results_dir=tmp_path / "results")
    patches = pd.read_parquet(tmp_path / "out" / "patches.parquet")
    assert list(patches.columns) == PATCHES.names
    paired = patches[patches.paired]
    assert len(paired) == 1 and paired.iloc[0].phrase == "the lesion" and list(paired.iloc[0].marker_indices) == [0]
    x1, y1, x2, y2 = paired.iloc[0].bbox
    assert x1 < 200 + 30 and x2 > 200  # the patch lies at the arrow's tip (200, 150), ahead of it
    assert Image.open(tmp_path / "out" / paired.iloc[0].crop_path).size == (x2 - x1, y2 - y1)
    orphan = patches[patches.patch_index.isna()]
    assert orphan.phrase.tolist() == ["the vessel"] and "no detected asterisk" in orphan.reason.iloc[0]
    skips = pd.read_parquet(tmp_path / "out" / "skips.parquet")
    assert skips.reason.tolist() == ["unreadable-image"]
    assert stats["markers"] == 1 and stats["patches_with_phrase"] == 1


# ----------------------------------------------------------------------------- learned detector


def test_varied_overlays_are_training_targets():
    from panel2patch.markers import learned
    from panel2patch.markers.synthetic import overlay, split_of

    rng = np.random.default_rng(0)
    seen = set()
    for i in range(30):
        base = grey_image(200, 240, seed=i)
        img, ms = overlay(base, rng, n=(0, 5), types=("arrow", "arrowhead", "asterisk", "other"), varied=True)
        for m in ms:
            x1, y1, x2, y2 = m["bbox"]
            assert 0 <= x1 < x2 <= 240 and 0 <= y1 < y2 <= 200
            assert (img[y1:y2, x1:x2] != base[y1:y2, x1:x2]).any()  # something is drawn in the box
            assert (m["tip"] is None) == (m["type"] == "asterisk")
            seen.add(m["type"])
    assert seen == {"arrow", "arrowhead", "asterisk", "other"}
    # the benchmark's held-back images are never training images
    assert {split_of(f"img{i}.jpg") for i in range(20)} == {"tune", "held-back"}
    ds = learned.MarkerPanels([_texture_source()], 3, seed=1, image_size=96)
    x, t = ds[2]
    assert x.shape[0] == 3 and max(x.shape[1:]) == 96 and t["boxes"].shape == (len(t["labels"]), 4)
    assert bool((ds[2][0] == x).all())  # item i is always the same image


def _texture_source():
    from panel2patch.layout.synthetic import Source

    return Source(Image.fromarray(grey_image(160, 200, seed=9)), "radiology", "test")


TINY = {"n_images": 4, "epochs": 2, "batch_size": 2, "image_size": 128, "warmup_steps": 1, "checkpoint_every": 0,
        "seed": 3, "sources": {"textures": 3}}


def test_tiny_marker_detector_artifact_and_combined_detection(tmp_path, monkeypatch):
    import hashlib

    import torch

    from panel2patch.markers import learned

    torch.set_num_threads(1)
    out = tmp_path / "models" / "marker_detector.pt"
    meta = learned.train_marker_detector(TINY, out, progress=False, results_dir=tmp_path / "results")
    side = out.with_suffix(".json")
    assert json.loads(side.read_text())["sha256"] == meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert meta["steps"] == 4 and meta["classes"] == list(learned.CLASSES) and meta["mlflow_run_id"]
    model = learned.load_marker_detector(out)
    assert not model.training and model.p2p_classes == learned.CLASSES

    img = grey_image()
    box = draw_arrow(img, (200.0, 150.0), math.radians(30), 60, 6, 18, 16, (230, 30, 30))
    heuristic = detect_markers(img, {"method": "heuristic"})
    # learned only: every box comes from the model (a 4-step model keeps all boxes at score 0)
    only = detect_markers(img, {"method": "learned", "weights": str(out), "learned_score": 0.0})
    assert only and all(m["source"] == "learned" and set(m) >= {"type", "bbox", "colour", "tip", "direction", "score"}
                        for m in only)
    assert all(m["type"] in learned.CLASSES[1:] for m in only)
    # both: the heuristic's arrow stays (with its tip), learned boxes join
    both = detect_markers(img, {"method": "both", "weights": str(out), "learned_score": 0.0})
    m = _one(both, box, "arrow")
    assert m["source"] in ("shapes", "shapes+learned") and m["tip"] == heuristic[0]["tip"]
    assert any(x["source"] == "learned" for x in both)
    # no weights: the heuristic detector, unchanged
    assert detect_markers(img, {"method": "both"}) == heuristic
    # a learned box over a glyph gets its tip and direction from the image-analysis cues
    from panel2patch.markers.detect import DEFAULTS

    r = learned.refine(img, {"type": "arrow", "bbox": box, "colour": None, "tip": None, "direction": None,
                             "score": 0.9, "source": "learned"}, DEFAULTS)
    assert r["colour"] == "red" and math.hypot(r["tip"][0] - 200, r["tip"][1] - 150) <= 4
    assert r["direction"][0] * math.cos(math.radians(30)) + r["direction"][1] * math.sin(math.radians(30)) > 0.9
