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
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torchvision
from PIL import Image

from .. import __version__
from . import synthetic

log = logging.getLogger(__name__)

FORMAT = "panel2patch-detector/1"
CLASSES = ("__background__", "panel", "label")

MODEL_KEYS = {
    "arch": "fasterrcnn_mobilenet_v3_large_fpn",
    "image_size": 320,                 # long side of the image the network sees (train and inference)
    "letters": True,                   # also detect printed panel letters (class "label")
    "representation_size": 256,        # box head width (torchvision's default is 1024)
    "anchor_sizes": [16, 32, 64, 128, 256, 512],
    "aspect_ratios": [0.25, 0.5, 1.0, 2.0, 4.0],
    "rpn_pre_nms_top_n_train": 600,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 64,
    "box_detections_per_img": 100,
}
DEFAULTS = {
    **MODEL_KEYS,
    "n_images": 240,                   # synthetic figures drawn for training
    "epochs": 1,
    "batch_size": 4,
    "lr": 0.002,
    "weight_decay": 0.0001,
    "warmup_steps": 10,
    "grad_clip": 10.0,
    "seed": 0,
    "threads": 1,                      # torch intra-op threads
    "checkpoint_every": 25,            # steps between resumable checkpoints (0: none)
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
    out = json.loads(json.dumps(DEFAULTS))
    for layer in (PRESETS[preset] if preset else {}, cfg or {}):
        for k, v in layer.items():
            if k not in out:
                raise KeyError(f"unknown detector config key {k!r}")
            if k == "sources":
                bad = set(v or {}) - set(out["sources"])
                if bad:
                    raise KeyError(f"unknown detector source keys {sorted(bad)}")
                out["sources"].update(v or {})
            else:
                out[k] = v
    return out


def build_model(model_cfg: dict) -> torch.nn.Module:
    """The network described by ``model_cfg`` (MODEL_KEYS), randomly initialised."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead

    m = {**MODEL_KEYS, **model_cfg}
    if m["arch"] != "fasterrcnn_mobilenet_v3_large_fpn":
        raise ValueError(f"unsupported detector arch {m['arch']!r}")
    num_classes = 3 if m["letters"] else 2
    size = int(m["image_size"])
    model = fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes, min_size=size, max_size=size,
        rpn_pre_nms_top_n_train=m["rpn_pre_nms_top_n_train"], rpn_post_nms_top_n_train=m["rpn_post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=m["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=m["rpn_post_nms_top_n_test"],
        rpn_batch_size_per_image=m["rpn_batch_size_per_image"], box_batch_size_per_image=m["box_batch_size_per_image"],
        box_detections_per_img=m["box_detections_per_img"])
    n_maps = len(model.rpn.anchor_generator.sizes)
    model.rpn.anchor_generator = AnchorGenerator((tuple(m["anchor_sizes"]),) * n_maps, (tuple(m["aspect_ratios"]),) * n_maps)
    model.rpn.head = RPNHead(model.backbone.out_channels, model.rpn.anchor_generator.num_anchors_per_location()[0])
    rep = int(m["representation_size"])
    resolution = model.roi_heads.box_roi_pool.output_size[0]
    model.roi_heads.box_head = TwoMLPHead(model.backbone.out_channels * resolution ** 2, rep)
    model.roi_heads.box_predictor = FastRCNNPredictor(rep, num_classes)
    return model


def model_config(cfg: dict) -> dict:
    return {k: cfg[k] for k in MODEL_KEYS}


# ----------------------------------------------------------------------------- files


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` then rename over ``path`` (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sidecar_path(weights: str | Path) -> Path:
    weights = Path(weights)
    return weights.with_suffix(".json") if weights.suffix == ".pt" else weights.with_name(weights.name + ".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _config_hash(cfg: dict) -> str:
    keep = {k: v for k, v in cfg.items() if k not in ("threads", "checkpoint_every")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- training


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return [perm[i:i + batch] for i in range(0, n, batch)]


def train_detector(cfg: dict | None, out_path: str | Path, progress: bool = True, results_dir: str | Path = "results",
                   tracking_cfg: dict | None = None, resume: bool = True) -> dict:
    """Train the detector described by ``cfg`` (see :func:`resolve_config`) and write ``out_path``
    plus its JSON sidecar; returns the sidecar's content."""
    from .. import tracking

    cfg = resolve_config(cfg)
    out_path = Path(out_path)
    ckpt_path = out_path.with_name(out_path.name + ".ckpt")
    torch.set_num_threads(int(cfg["threads"]))
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    t_start = time.perf_counter()
    sources = synthetic.build_sources(cfg["sources"], seed)
    t_sources = time.perf_counter() - t_start
    ds = synthetic.SyntheticFigures(sources, cfg["n_images"], seed, max_side=cfg["image_size"], letters=cfg["letters"])
    steps_per_epoch = math.ceil(len(ds) / cfg["batch_size"])
    total = steps_per_epoch * int(cfg["epochs"])
    model = build_model(model_config(cfg))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, int(cfg["warmup_steps"])))
    step, history = 0, []
    chash = _config_hash(cfg)
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if state.get("config_hash") == chash:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            step, history = int(state["step"]), list(state["history"])
            log.info("resuming %s from step %d", out_path, step)
        else:
            log.warning("ignoring %s: it was written for another config", ckpt_path)

    def save_ckpt():
        state = {"config_hash": chash, "step": step, "history": history, "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state()}
        _atomic_write(ckpt_path, lambda p: torch.save(state, p))

    run_params = {**cfg, "preset_steps": total, "sources_used": sources.summary()}
    with tracking.stage_run("train_detector", out_path.stem, run_params, results_dir, tracking_cfg) as run:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc="train_detector", unit="step")
        t_train = time.perf_counter()
        t_data = 0.0
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            idx = _batches(len(ds), cfg["batch_size"], seed, epoch)[k]
            t0 = time.perf_counter()
            items = [ds[i] for i in idx]
            t1 = time.perf_counter()
            t_data += t1 - t0
            losses = model([x for x, _ in items], [{"boxes": t["boxes"], "labels": t["labels"]} for _, t in items])
            loss = sum(losses.values())
            lr = opt.param_groups[0]["lr"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["grad_clip"])
            opt.step()
            sched.step()
            rec = {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}, "lr": lr,
                   "step_seconds": time.perf_counter() - t0, "data_seconds": t1 - t0}
            if not math.isfinite(rec["loss"]):
                raise FloatingPointError(f"detector loss is {rec['loss']} at step {step}")
            history.append(rec["loss"])
            run.log_metrics(rec, step=step)
            step += 1
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if cfg["checkpoint_every"] and step % int(cfg["checkpoint_every"]) == 0 and step < total:
                save_ckpt()
        if bar:
            bar.close()
        train_seconds = time.perf_counter() - t_train
        model.eval()
        payload = {"format": FORMAT, "model": model_config(cfg), "classes": list(CLASSES[: 3 if cfg["letters"] else 2]),
                   "state_dict": model.state_dict()}
        _atomic_write(out_path, lambda p: torch.save(payload, p))
        k = max(1, min(20, len(history) // 5))
        meta = {
            "format": FORMAT, "weights": out_path.name, "sha256": _sha256(out_path), "bytes": out_path.stat().st_size,
            "config": cfg, "config_hash": chash, "seed": seed, "classes": payload["classes"],
            "steps": total, "images_seen": total * cfg["batch_size"],
            "loss_first": float(np.mean(history[:k])) if history else None,
            "loss_last": float(np.mean(history[-k:])) if history else None,
            "sources_used": sources.summary(), "sources_sha256": sources.fingerprint(),
            "sources_seconds": round(t_sources, 2),
            "train_seconds": round(train_seconds, 2), "data_seconds": round(t_data, 2),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "matplotlib": matplotlib.__version__,
            "panel2patch": __version__,
            "python": platform.python_version(), "mlflow_run_id": run.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        side = sidecar_path(out_path)
        _atomic_write(side, lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))
        import mlflow

        mlflow.log_artifact(str(out_path), artifact_path="model")
        mlflow.log_artifact(str(side), artifact_path="model")
        mlflow.set_tag("detector.sha256", meta["sha256"])
        run.log_metrics({"train_seconds": train_seconds, "loss_first": meta["loss_first"] or 0.0,
                         "loss_last": meta["loss_last"] or 0.0})
        run.log_outputs({"weights": out_path, "sidecar": side})
    if ckpt_path.exists():
        ckpt_path.unlink()
    log.info("detector %s: %d steps in %.0f s, loss %.3f -> %.3f", out_path, total, train_seconds,
             meta["loss_first"] or 0, meta["loss_last"] or 0)
    return meta


# ----------------------------------------------------------------------------- inference


def load_detector(path: str | Path, verify: bool = True) -> torch.nn.Module:
    """A detector written by :func:`train_detector` (or any file in its format), in eval mode.

    With ``verify``, the file's sha256 must match its sidecar's when there is one. The model
    carries ``model.p2p_meta`` (the sidecar, or ``{"model": ...}`` without one).
    """
    path = Path(path)
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.exists() else None
    if verify and meta and meta.get("sha256") and meta["sha256"] != _sha256(path):
        raise ValueError(f"{path}: sha256 does not match {side.name}; the weights were changed or truncated")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a panel2patch detector ({payload.get('format')!r}, expected {FORMAT!r})")
    model = build_model(payload["model"])
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.p2p_meta = meta or {"model": payload["model"]}
    model.p2p_classes = tuple(payload.get("classes", CLASSES))
    return model


def _to_tensor(image) -> torch.Tensor:
    if isinstance(image, (str, Path)):
        with Image.open(image) as im:
            image = im.convert("RGB")
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"), dtype=np.uint8)
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return torch.from_numpy(a[..., :3].copy()).permute(2, 0, 1).float().div_(255)


@torch.no_grad()
def detect(model: torch.nn.Module, image, score_threshold: float = 0.5) -> dict[str, list[dict]]:
    """Panels and printed letters in ``image`` (PIL image, HxWx3 array or path).

    Returns ``{"panels": [{"bbox", "score"}], "labels": [{"bbox", "score"}]}``, each sorted by
    score; boxes ``[x1, y1, x2, y2]`` in the original image's pixels (floats).
    """
    was_training = model.training
    model.eval()
    out = model([_to_tensor(image)])[0]
    if was_training:
        model.train()
    res: dict[str, list[dict]] = {"panels": [], "labels": []}
    for box, lab, score in zip(out["boxes"].tolist(), out["labels"].tolist(), out["scores"].tolist()):
        if score < score_threshold:
            continue
        key = "panels" if lab == synthetic.PANEL else "labels" if lab == synthetic.LABEL else None
        if key:
            res[key].append({"bbox": [round(v, 1) for v in box], "score": round(float(score), 4)})
    return res


def detect_panels(model: torch.nn.Module, image, score_threshold: float = 0.5) -> list[dict]:
    """Panel boxes ``[{"bbox": [x1, y1, x2, y2], "score"}]`` in original pixels, best first."""
    return detect(model, image, score_threshold)["panels"]
