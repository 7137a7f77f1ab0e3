"""The learned panel detector: a torchvision Faster R-CNN trained from scratch on synthetic figures.

Model: ``fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)`` (nothing is
downloaded) with three classes (background, panel, printed panel letter), made cheaper for CPU
training: a 256-wide box head instead of 1024, fewer RPN proposals and sampled RoIs, and anchors
from 16 px (letters) to 512 px with aspect ratios 1:4 to 4:1 (strip-shaped panels). Images are
resized so their long side is ``image_size`` for training and inference; boxes come back in the
original image's pixels.

Training (:func:`train_detector`) draws ``n_images`` figures with
:mod:`panel2patch.layout.synthetic` and runs ``epochs`` passes of AdamW with warm-up and cosine
decay. Every ``checkpoint_every`` steps the full state (model, optimiser, schedule, RNG) is written
atomically to ``<out>.ckpt``, and a rerun with the same config resumes from it. The result is a
versioned artifact: ``<out>`` (``{"format", "model", "state_dict"}``, loadable with
``torch.load(weights_only=True)``) and ``<out minus .pt>.json`` (config, seed, sha256 of the
weights, torch/torchvision versions, sources used, losses, timings, MLflow run id); both are
logged to MLflow in the ``train_detector:<name>`` run with per-step losses as metrics.

Sizes, measured on one shared CPU thread (``benchmarks/detector_eval.py``; dev = the 18
hand-labelled dev figures, panel F1 at IoU >= 0.5 and score >= 0.5):

* ``PRESETS["demo"]`` (the defaults: 240 figures, 60 steps of 4, 320 px): ~100 s of training plus
  ~10 s to build the source bank. A smoke-test model: it detects nothing yet (dev F1 0.0).
* ``PRESETS["cpu15"]`` (2,400 figures, 600 steps, 320 px): ~15 min; dev panel F1 0.62
  (P 0.59, R 0.65), held-back synthetic F1 0.71; letters are not found at this size.
* ``PRESETS["large"]`` (6,000 figures x 2 epochs = 3,000 steps, 512 px): the setting for real use,
  not measured here (about 2-3 h on one CPU core by step time; minutes on a GPU).

Inference: ~100 ms per figure on one CPU thread at 320 px.

The network, training loop, checkpoints and artifact files are shared with the marker detector
(:mod:`panel2patch.torchdet`); this module holds the panel detector's data, classes and defaults.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from .. import torchdet
from . import synthetic

log = logging.getLogger(__name__)

FORMAT = "panel2patch-detector/1"
CLASSES = ("__background__", "panel", "label")

MODEL_KEYS = {
    **torchdet.MODEL_KEYS,
    "letters": True,                   # also detect printed panel letters (class "label")
}
DEFAULTS = {
    **MODEL_KEYS,
    "n_images": 240,                   # synthetic figures drawn for training
    **torchdet.TRAIN_KEYS,
    "sources": {**synthetic.DEFAULT_SOURCES, "charts": 48, "diagrams": 16, "textures": 80},
}
PRESETS = {
    "demo": {},
    "cpu15": {"n_images": 2400, "warmup_steps": 30, "checkpoint_every": 100,
              "sources": {"charts": 200, "diagrams": 60, "textures": 200}},
    "large": {"n_images": 6000, "epochs": 2, "image_size": 512,
              "sources": {"charts": 400, "diagrams": 120, "textures": 300}},
}


def resolve_config(cfg: dict | None = None, preset: str | None = None) -> dict:
    """DEFAULTS, then a preset, then ``cfg``; unknown keys are an error (they are typos)."""
    return torchdet.resolve_config(DEFAULTS, PRESETS, cfg, preset)


def build_model(model_cfg: dict) -> torch.nn.Module:
    """The network described by ``model_cfg`` (MODEL_KEYS), randomly initialised."""
    m = {**MODEL_KEYS, **model_cfg}
    return torchdet.build_model({k: v for k, v in m.items() if k != "letters"}, 3 if m["letters"] else 2)


def model_config(cfg: dict) -> dict:
    return {k: cfg[k] for k in MODEL_KEYS}


def train_detector(cfg: dict | None, out_path: str | Path, progress: bool = True, results_dir: str | Path = "results",
                   tracking_cfg: dict | None = None, resume: bool = True) -> dict:
    """Train the detector described by ``cfg`` (see :func:`resolve_config`) and write ``out_path``
    plus its JSON sidecar; returns the sidecar's content."""
    cfg = resolve_config(cfg)
    torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    sources = synthetic.build_sources(cfg["sources"], seed)
    t_sources = time.perf_counter() - t_start
    ds = synthetic.SyntheticFigures(sources, cfg["n_images"], seed, max_side=cfg["image_size"], letters=cfg["letters"])
    model = build_model(model_config(cfg))
    return torchdet.train(
        model, ds, cfg, out_path, stage="train_detector", fmt=FORMAT, model_cfg=model_config(cfg),
        classes=list(CLASSES[: 3 if cfg["letters"] else 2]), progress=progress, results_dir=results_dir,
        tracking_cfg=tracking_cfg, resume=resume,
        meta_extra={"sources_used": sources.summary(), "sources_sha256": sources.fingerprint(),
                    "sources_seconds": round(t_sources, 2)})


# ----------------------------------------------------------------------------- inference


def load_detector(path: str | Path, verify: bool = True) -> torch.nn.Module:
    """A detector written by :func:`train_detector` (or any file in its format), in eval mode.

    With ``verify``, the file's sha256 must match its sidecar's when there is one. The model
    carries ``model.p2p_meta`` (the sidecar, or ``{"model": ...}`` without one).
    """
    return torchdet.load(path, FORMAT, lambda m, classes: build_model(m), verify)


def detect(model: torch.nn.Module, image, score_threshold: float = 0.5) -> dict[str, list[dict]]:
    """Panels and printed letters in ``image`` (PIL image, HxWx3 array or path).

    Returns ``{"panels": [{"bbox", "score"}], "labels": [{"bbox", "score"}]}``, each sorted by
    score; boxes ``[x1, y1, x2, y2]`` in the original image's pixels (floats).
    """
    out = torchdet.predict(model, image)
    res: dict[str, list[dict]] = {"panels": [], "labels": []}
    for box, lab, score in zip(out["boxes"], out["labels"], out["scores"]):
        if score < score_threshold:
            continue
        key = "panels" if lab == synthetic.PANEL else "labels" if lab == synthetic.LABEL else None
        if key:
            res[key].append({"bbox": [round(v, 1) for v in box], "score": round(float(score), 4)})
    return res


def detect_panels(model: torch.nn.Module, image, score_threshold: float = 0.5) -> list[dict]:
    """Panel boxes ``[{"bbox": [x1, y1, x2, y2], "score"}]`` in original pixels, best first."""
    return detect(model, image, score_threshold)["panels"]
