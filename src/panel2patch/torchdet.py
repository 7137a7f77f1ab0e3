"""Shared machinery of the learned detectors (torchvision Faster R-CNN trained from scratch).

Used by :mod:`panel2patch.layout.detector` (panels and panel letters) and
:mod:`panel2patch.markers.learned` (arrows, arrowheads, asterisks). Each of those owns its data,
classes and defaults; this module holds what they share:

* :func:`build_model` - ``fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)``
  (nothing is downloaded) with configurable anchors, a narrower box head and fewer proposals
  (cheaper on CPU). Images are resized so their long side is ``image_size``.
* :func:`resolve_config` - defaults, then a preset, then overrides; unknown keys are errors.
* :func:`train` - AdamW with warm-up and cosine decay over a map-style dataset of
  ``(CHW float tensor, {"boxes", "labels"})``; atomic resumable checkpoints every
  ``checkpoint_every`` steps (``<out>.ckpt``: model, optimiser, schedule, RNG); writes the
  versioned artifact ``<out>`` (``{"format", "model", "classes", "state_dict"}``, loadable with
  ``torch.load(weights_only=True)``) and its JSON sidecar (config, seed, sha256, versions, losses,
  timings, MLflow run id), both logged to MLflow with per-step losses as metrics.
* :func:`load` - an artifact back as a model in eval mode, its sha256 checked against the sidecar.
* :func:`to_tensor` - PIL image / HxWx3 array / path -> CHW float tensor in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

from . import __version__
from .digest import sha256_file

log = logging.getLogger(__name__)

MODEL_KEYS = {
    "arch": "fasterrcnn_mobilenet_v3_large_fpn",
    "image_size": 320,                 # long side of the image the network sees (train and inference)
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
TRAIN_KEYS = {
    "epochs": 1,
    "batch_size": 4,
    "lr": 0.002,
    "weight_decay": 0.0001,
    "warmup_steps": 10,
    "grad_clip": 10.0,
    "seed": 0,
    "threads": 1,                      # torch intra-op threads
    "checkpoint_every": 25,            # steps between resumable checkpoints (0: none)
}


def resolve_config(defaults: dict, presets: dict, cfg: dict | None = None, preset: str | None = None,
                   nested: tuple[str, ...] = ("sources",), what: str = "detector") -> dict:
    """``defaults``, then ``presets[preset]``, then ``cfg``; keys in ``nested`` are dicts merged
    key by key. Unknown keys are an error (they are typos)."""
    out = json.loads(json.dumps(defaults))
    for layer in (presets[preset] if preset else {}, cfg or {}):
        for k, v in layer.items():
            if k not in out:
                raise KeyError(f"unknown {what} config key {k!r}")
            if k in nested:
                bad = set(v or {}) - set(out[k])
                if bad:
                    raise KeyError(f"unknown {what} {k} keys {sorted(bad)}")
                out[k].update(v or {})
            else:
                out[k] = v
    return out


def build_model(model_cfg: dict, num_classes: int) -> torch.nn.Module:
    """The network described by ``model_cfg`` (MODEL_KEYS) with ``num_classes`` (background
    included), randomly initialised."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.rpn import RPNHead

    m = {**MODEL_KEYS, **model_cfg}
    if m["arch"] != "fasterrcnn_mobilenet_v3_large_fpn":
        raise ValueError(f"unsupported detector arch {m['arch']!r}")
    size = int(m["image_size"])
    kw = dict(
        num_classes=num_classes, min_size=size, max_size=size,
        rpn_pre_nms_top_n_train=m["rpn_pre_nms_top_n_train"], rpn_post_nms_top_n_train=m["rpn_post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=m["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=m["rpn_post_nms_top_n_test"],
        rpn_batch_size_per_image=m["rpn_batch_size_per_image"], box_batch_size_per_image=m["box_batch_size_per_image"],
        box_detections_per_img=m["box_detections_per_img"])
    if m.get("returned_layers"):
        # FPN levels from these MobileNet stages (torchvision's default, [4, 5], gives stride 32 twice;
        # [2, 3, 5] gives strides 8, 16, 32 for small objects), all layers trainable, plain BatchNorm
        from torchvision.models.detection import FasterRCNN
        from torchvision.models.detection.backbone_utils import mobilenet_backbone

        backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                      norm_layer=torch.nn.BatchNorm2d, trainable_layers=6,
                                      returned_layers=list(m["returned_layers"]))
        model = FasterRCNN(backbone, rpn_score_thresh=0.05, **kw)
    else:
        model = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, **kw)
    # feature maps: the returned stages plus FPN's extra max-pool level
    n_maps = len(m["returned_layers"]) + 1 if m.get("returned_layers") else len(model.rpn.anchor_generator.sizes)
    sizes = m["anchor_sizes"]
    if sizes and isinstance(sizes[0], (list, tuple)):  # one list of sizes per FPN level
        if len(sizes) != n_maps:
            raise ValueError(f"anchor_sizes has {len(sizes)} levels, the network {n_maps}")
        per_level = tuple(tuple(s) for s in sizes)
    else:
        per_level = (tuple(sizes),) * n_maps
    model.rpn.anchor_generator = AnchorGenerator(per_level, (tuple(m["aspect_ratios"]),) * n_maps)
    model.rpn.head = RPNHead(model.backbone.out_channels, model.rpn.anchor_generator.num_anchors_per_location()[0])
    rep = int(m["representation_size"])
    resolution = model.roi_heads.box_roi_pool.output_size[0]
    model.roi_heads.box_head = TwoMLPHead(model.backbone.out_channels * resolution ** 2, rep)
    model.roi_heads.box_predictor = FastRCNNPredictor(rep, num_classes)
    return model


# ----------------------------------------------------------------------------- files


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
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


def config_hash(cfg: dict) -> str:
    keep = {k: v for k, v in cfg.items() if k not in ("threads", "checkpoint_every")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- training


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch)).tolist()
    return [perm[i:i + batch] for i in range(0, n, batch)]


def train(model: torch.nn.Module, ds, cfg: dict, out_path: str | Path, *, stage: str, fmt: str, model_cfg: dict,
          classes: list[str], meta_extra: dict | None = None, progress: bool = True,
          results_dir: str | Path = "results", tracking_cfg: dict | None = None, resume: bool = True) -> dict:
    """Train ``model`` on ``ds`` (``len``, ``ds[i] -> (image tensor, {"boxes", "labels"})``) with the
    TRAIN_KEYS of ``cfg``; write ``out_path`` (format ``fmt``) and its sidecar; log everything to
    the MLflow run ``<stage>:<out_path stem>``. Returns the sidecar's content."""
    from . import tracking

    out_path = Path(out_path)
    ckpt_path = out_path.with_name(out_path.name + ".ckpt")
    seed = int(cfg["seed"])
    steps_per_epoch = math.ceil(len(ds) / cfg["batch_size"])
    total = steps_per_epoch * int(cfg["epochs"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, int(cfg["warmup_steps"])))
    step, history = 0, []
    chash = config_hash(cfg)
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # a copied-in file runs no code
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
        atomic_write(ckpt_path, lambda p: torch.save(state, p))

    extra = meta_extra or {}
    run_params = {**cfg, "preset_steps": total, **{k: v for k, v in extra.items() if k == "sources_used"}}
    with tracking.stage_run(stage, out_path.stem, run_params, results_dir, tracking_cfg) as run:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=step, desc=stage, unit="step")
        t_train = time.perf_counter()
        t_data = 0.0
        while step < total:
            epoch, k = divmod(step, steps_per_epoch)
            idx = batches(len(ds), cfg["batch_size"], seed, epoch)[k]
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
                raise FloatingPointError(f"{stage} loss is {rec['loss']} at step {step}")
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
        payload = {"format": fmt, "model": model_cfg, "classes": list(classes), "state_dict": model.state_dict()}
        atomic_write(out_path, lambda p: torch.save(payload, p))
        k = max(1, min(20, len(history) // 5))
        import matplotlib

        meta = {
            "format": fmt, "weights": out_path.name, "sha256": sha256_file(out_path), "bytes": out_path.stat().st_size,
            "config": cfg, "config_hash": chash, "seed": seed, "classes": list(classes),
            "steps": total, "images_seen": total * cfg["batch_size"],
            "loss_first": float(np.mean(history[:k])) if history else None,
            "loss_last": float(np.mean(history[-k:])) if history else None,
            **extra,
            "train_seconds": round(train_seconds, 2), "data_seconds": round(t_data, 2),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "matplotlib": matplotlib.__version__,
            "panel2patch": __version__,
            "python": platform.python_version(), "mlflow_run_id": run.run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        side = sidecar_path(out_path)
        atomic_write(side, lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))
        import mlflow

        mlflow.log_artifact(str(out_path), artifact_path="model")
        mlflow.log_artifact(str(side), artifact_path="model")
        mlflow.set_tag(f"{stage.removeprefix('train_')}.sha256", meta["sha256"])
        run.log_metrics({"train_seconds": train_seconds, "loss_first": meta["loss_first"] or 0.0,
                         "loss_last": meta["loss_last"] or 0.0})
        run.log_outputs({"weights": out_path, "sidecar": side})
    if ckpt_path.exists():
        ckpt_path.unlink()
    log.info("%s %s: %d steps in %.0f s, loss %.3f -> %.3f", stage, out_path, total, train_seconds,
             meta["loss_first"] or 0, meta["loss_last"] or 0)
    return meta


# ----------------------------------------------------------------------------- inference


def load(path: str | Path, fmt: str, build: Callable[[dict, list[str]], torch.nn.Module], verify: bool = True,
         what: str = "detector") -> torch.nn.Module:
    """An artifact written by :func:`train` in format ``fmt``, built with ``build(model_cfg,
    classes)``, in eval mode. With ``verify``, the file's sha256 must match its sidecar's when
    there is one. The model carries ``p2p_meta`` (the sidecar, or ``{"model": ...}``) and
    ``p2p_classes``."""
    path = Path(path)
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.exists() else None
    if verify and meta and meta.get("sha256") and meta["sha256"] != sha256_file(path):
        raise ValueError(f"{path}: sha256 does not match {side.name}; the weights were changed or truncated")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != fmt:
        raise ValueError(f"{path}: not a panel2patch {what} ({payload.get('format')!r}, expected {fmt!r})")
    classes = list(payload.get("classes") or [])
    model = build(payload["model"], classes)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    model.p2p_meta = meta or {"model": payload["model"]}
    model.p2p_classes = tuple(classes)
    return model


def to_tensor(image) -> torch.Tensor:
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
def predict(model: torch.nn.Module, image) -> dict:
    """One image through ``model`` in eval mode: ``{"boxes", "labels", "scores"}`` as lists,
    boxes in the image's own pixels."""
    was_training = model.training
    model.eval()
    out = model([to_tensor(image)])[0]
    if was_training:
        model.train()
    return {"boxes": out["boxes"].tolist(), "labels": out["labels"].tolist(), "scores": out["scores"].tolist()}
