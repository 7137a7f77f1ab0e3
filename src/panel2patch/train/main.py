"""Granularity-aware pretraining with DeepSpeed ZeRO (or plain DDP with ``--no-deepspeed``).

Run it::

    # one process (CPU or one GPU)
    python -m panel2patch.train.main --config config/train/tiny.yaml --data results/pairs/shards
    # 2 processes on one machine
    torchrun --nproc_per_node 2 -m panel2patch.train.main --config config/train/tiny.yaml
    # a Slurm job step: ranks from SLURM_PROCID/SLURM_NTASKS (see distributed.py)
    srun --ntasks 8 --gpus-per-task 1 python -m panel2patch.train.main --config config/train/base.yaml
    # any config key from the command line (the value is YAML)
    python -m panel2patch.train.main --config c.yaml --set max_steps=20 --set schedule=alternate

The run config (YAML, keys in :data:`DEFAULTS`) is the single source of the batch arithmetic: the
DeepSpeed JSON's ``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps`` and
``train_batch_size`` are overwritten from it (micro x accum x world), so the two always agree.
No optimizer is named in the DeepSpeed JSON: a torch AdamW is passed to ``deepspeed.initialize``
(naming one makes DeepSpeed compile fused_adam on CPU).

Each micro step: the levels the granularity schedule picks (``alternate``: one level per micro
step, M -> P -> R; ``mix``: all, plus the cross-level terms) are concatenated into one forward
pass (images; texts plus K perturbed texts per row), split back, and fed to
:class:`GranularityLoss`; ``engine.backward``/``engine.step``.  Terms, each logged as
``train/<name>`` unweighted, ``train/loss`` the weighted sum (``weights`` in the run config):

* ``clip/<level>``: CLIP inside each level; ``cross/<child>/{image,text}``: children's mean vs parent;
* ``mgll/soft_ce/<g>``, ``mgll/bce/<g>``, ``mgll/kl``: MGLL over all rows of the step, one text per
  granularity g = each active level (a row's ancestor's text at g, see :func:`mgll_batch`), soft
  targets from shared figure / article / panel / identical text;
* ``discrimination``: each row's image picks its text among ``perturb_k`` perturbations of it
  (perturb.py, made in the data pipeline, encoded in the same forward by the text tower).

A weight of 0 turns a term off and skips its inputs (``perturb_k`` 0 too; with both MGLL weights
0, ``logit_bias``, used only by MGLL's BCE, is frozen).  Batches are cut from consecutive pairs of
all configured levels; with ``alternate`` a micro step uses only its level's rows of the batch
(the other rows are read but not trained on).  With DeepSpeed the 0-dim
``logit_scale``/``logit_bias`` train as shape (1,) (DeepSpeed 0.19.8 cannot broadcast 0-dim bf16
tensors); the export restores shape ().

Output directory::

    <output_dir>/checkpoints/step00000010/...   DeepSpeed checkpoint (all ranks write) + rng_rank<r>.pt
    <output_dir>/checkpoints/latest             DeepSpeed's pointer; a rerun resumes from it
    <output_dir>/final/                         save_pretrained (open_clip local-dir folder, text/ for transformers)
                                                + README.md model card (provenance, licences, val and test recall)
    <output_dir>/run_config.yaml, ds_config.json, metrics.jsonl

Resume restores weights, optimizer, LR schedule, the step, the data position (epoch, batches
consumed: an epoch's batch order is a pure function of seed, epoch and rank) and every rank's RNG
states, so a killed and resumed run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from panel2patch.train import data as D
from panel2patch.train import distributed as dist_utils
from panel2patch.train.evaluate import evaluate
from panel2patch.train.losses import DEFAULT_WEIGHTS, LEVELS, GranularityLoss, granularity_schedule

log = logging.getLogger("panel2patch.train")

REPO = Path(__file__).resolve().parents[3]

DEFAULTS = {
    "model": "tiny",  # a name in model/configs or a JSON path
    "init": "random",  # random | minilm | path:<dir|file> | hf:<id> (see build_model)
    "freeze_vision_except_last": None,  # Panel2Patch trains only the last vision blocks (int)
    "data": None,  # shard folder with sizes.json (required; --data)
    "levels": list(LEVELS),  # pair levels read from the shards and trained
    "schedule": "mix",  # alternate (one level per micro step) | mix (all levels + cross-level)
    "weights": dict(DEFAULT_WEIGHTS),  # GranularityLoss weights: clip, cross, mgll, mgll_kl, discrimination
    "perturb_k": 3,  # perturbed texts per pair for discrimination (the original is the (K+1)-th choice)
    "lr": 5.0e-4,
    "wd": 0.05,  # Panel2Patch's AdamW weight decay
    "betas": [0.9, 0.98],  # CLIP's
    "warmup_steps": 2,
    "epochs": 1,
    "max_steps": None,  # optimizer steps; stops early within an epoch when reached
    "micro_batch": 16,  # pairs per rank per micro step (all levels together)
    "grad_accum": 1,
    "deepspeed": "config/deepspeed/zero2_bf16.json",  # relative to the repo or absolute
    "use_deepspeed": True,
    "checkpoint_every": 50,  # optimizer steps; 0: only at the end
    "keep_checkpoints": 2,
    "seed": 0,
    "output_dir": None,  # None: results/train/<config file stem>
    "num_workers": 0,
    "eval_batch": 64,
    "eval_every_epoch": True,
    "threads": None,  # torch intra-op threads per rank (None: torch's default)
    # MLflow (rank 0): the run nests under the workflow's parent run; its dataset inputs are the
    # corpus shards' manifest and the articles in each shard (tables, panel2patch.tracking); the
    # exported model is logged as an MLflow pyfunc model and registered as registered_model_name
    # ("{run}" = the run's name; null: logged, not registered)
    "mlflow": {"enabled": True, "results_dir": "results", "uri": None, "experiment": "panel2patch", "name": None,
               "registered_model_name": "panel2patch-{run}"},
}


# ------------------------------------------------------------------------------------- config
def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        cfg = _merge(cfg, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides:
        key, _, value = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown run config keys {sorted(unknown)}")
    bad = [lvl for lvl in cfg["levels"] if lvl not in LEVELS]
    if bad or not cfg["levels"]:
        raise ValueError(f"levels {cfg['levels']}: expected a non-empty subset of {LEVELS}")
    return cfg


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else REPO / p


def ds_config_for(cfg: dict, world: int) -> dict:
    """The DeepSpeed config with the batch numbers taken from the run config."""
    ds = json.loads(_resolve(cfg["deepspeed"]).read_text())
    want = {
        "train_micro_batch_size_per_gpu": int(cfg["micro_batch"]),
        "gradient_accumulation_steps": int(cfg["grad_accum"]),
        "train_batch_size": int(cfg["micro_batch"]) * int(cfg["grad_accum"]) * world,  # micro x accum x world
    }
    for k, v in want.items():
        if k in ds and ds[k] != v:
            log.info("ds_config %s: %s -> %s (from the run config)", k, ds[k], v)
        ds[k] = v
    if "optimizer" in ds:  # we pass a torch optimizer; a named one would compile fused_adam on CPU
        log.warning("ds_config names an optimizer; dropped (the trainer passes torch AdamW)")
        ds.pop("optimizer")
    ds.pop("scheduler", None)
    if not torch.cuda.is_available() and ds.get("fp16", {}).get("enabled"):
        raise ValueError("fp16 needs CUDA; use bf16 on CPU")
    assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world
    return ds


# ----------------------------------------------------------------------------------- engines
class PlainEngine:
    """The slice of DeepSpeed's engine API the loop uses, over plain torch (DDP when world > 1)."""

    def __init__(self, model, optimizer, scheduler, grad_accum: int, clip: float | None, world: int):
        self.module = model
        self.wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        self.optimizer, self.lr_scheduler = optimizer, scheduler
        self.grad_accum, self.clip = grad_accum, clip
        self.micro_steps = 0

    def __call__(self, **kw):
        return self.wrapped(**kw)

    def train(self):
        self.wrapped.train()

    def eval(self):
        self.wrapped.eval()

    def bfloat16_enabled(self) -> bool:
        return False

    def backward(self, loss):
        (loss / self.grad_accum).backward()

    def step(self):
        self.micro_steps += 1
        if self.micro_steps % self.grad_accum:
            return
        if self.clip:
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()

    def save_checkpoint(self, save_dir, tag, client_state):
        if dist_utils.is_main():
            path = Path(save_dir) / tag
            path.mkdir(parents=True, exist_ok=True)
            torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "lr_scheduler": self.lr_scheduler.state_dict(), "micro_steps": self.micro_steps,
                        "client_state": client_state}, path / "plain_state.pt")
            (Path(save_dir) / "latest").write_text(tag)
        dist_utils.barrier()

    def load_checkpoint(self, load_dir):
        tag = (Path(load_dir) / "latest").read_text().strip()
        state = torch.load(Path(load_dir) / tag / "plain_state.pt", map_location="cpu", weights_only=True)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.micro_steps = state["micro_steps"]
        return str(Path(load_dir) / tag), state["client_state"]


def lr_lambda(warmup: int, total: int):
    """Linear warmup then cosine to 10% (a function of the optimizer step)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    return f


# -------------------------------------------------------------------------------- batch/loss
# The column holding a pair's ancestor (or itself) at each level (data.collate): the figure of any
# pair; the panel of a panel or patch pair (-1 for a figure pair); a patch only itself.
_KEY_AT = {"figure": "figure_id", "panel": "panel_id", "patch": "id"}


def mgll_batch(feats: dict, batch: dict, levels: list[str], device) -> dict:
    """MGLL's input from the rows already encoded (no extra forward).

    Images: every row of the active levels (N = sum n).  Granularities: the active levels.  At
    granularity g a row's text is its ancestor's text at g (a patch's figure caption, its panel's
    subcaption) when that ancestor's pair is in the local batch, else its own text (a figure at
    g = patch, or a panel whose figure fell outside the batch).  Positives (ids (K, N), see
    losses.mgll_targets) coarsen with g: at ``figure`` shared figure, shared article or identical
    text; at ``panel`` shared panel or identical text; at ``patch`` identical text only."""
    image = torch.cat([feats[lvl]["image"] for lvl in levels])  # (N, D)
    own_text = torch.cat([feats[lvl]["text"] for lvl in levels])  # (N, D)
    col = {k: torch.cat([batch[lvl][k] for lvl in levels]).to(device)
           for k in ("figure_id", "article_id", "panel_id", "id", "text_id")}  # (N,) each
    texts, ids = {}, {}
    for g in levels:
        key = _KEY_AT[g]
        text, text_id = own_text, col["text_id"]
        anc = batch[g][key].to(device)  # (m,) the ids of the pairs at level g
        if anc.numel():
            hit = (col[key].unsqueeze(1) == anc.unsqueeze(0)) & (col[key] >= 0).unsqueeze(1)  # (N, m)
            found, idx = hit.any(1), hit.float().argmax(1)  # first matching row of level g
            text = torch.where(found.unsqueeze(1), feats[g]["text"][idx], own_text)
            text_id = torch.where(found, batch[g]["text_id"].to(device)[idx], text_id)
        texts[g] = text
        if g == "figure":
            ids[g] = torch.stack([col["figure_id"], col["article_id"], text_id])
        elif g == "panel":
            ids[g] = torch.stack([col["panel_id"], text_id])
        else:
            ids[g] = text_id.unsqueeze(0)
    return {"image": image, "texts": texts, "ids": ids}


def forward_batch(engine, batch: dict, levels: list[str], loss_fn: GranularityLoss, bf16: bool, device,
                  mgll: bool = True) -> dict:
    """One forward over the active levels (images and texts concatenated, plus every row's K
    perturbed texts when the batch carries them), then the loss dict."""
    counts = [batch[lvl]["image"].shape[0] for lvl in levels]
    images = torch.cat([batch[lvl]["image"] for lvl in levels]).to(device)  # (sum n, 3, S, S)
    perturbed = [batch[lvl]["perturbed_ids"] for lvl in levels if "perturbed_ids" in batch[lvl]]
    p_counts = [p.shape[0] * p.shape[1] for p in perturbed]  # m x K per level
    ids = torch.cat([batch[lvl]["ids"] for lvl in levels] + [p.flatten(0, 1) for p in perturbed]).to(device)
    if bf16:
        images = images.to(torch.bfloat16)
    out = engine(images=images, ids=ids)  # (sum n, D), (sum n + sum m K, D)
    img_parts = out["image_features"].float().split(counts)
    txt_all = out["text_features"].float()
    txt_parts = txt_all[: sum(counts)].split(counts)
    feats = {}
    for lvl, img, txt in zip(levels, img_parts, txt_parts):
        b = batch[lvl]
        if lvl == "figure":
            gid, parent = b["figure_id"], None
        elif lvl == "panel":
            gid, parent = b["panel_id"], b["figure_id"]
        else:
            gid, parent = b["id"], b["panel_id"]
        feats[lvl] = {"image": img, "text": txt, "id": gid.to(device)}
        if parent is not None:
            feats[lvl]["parent_id"] = parent.to(device)
    if mgll:
        feats["mgll"] = mgll_batch(feats, batch, levels, device)
    if perturbed:  # image of each perturbed row vs (original, K perturbed) texts
        p_txt = txt_all[sum(counts):].split(p_counts)
        d_img, d_txt = [], []
        for lvl, pt, p in zip([lvl for lvl in levels if "perturbed_ids" in batch[lvl]], p_txt, perturbed):
            rows = batch[lvl]["perturbed_rows"].to(device)
            d_img.append(feats[lvl]["image"][rows])
            d_txt.append(torch.cat([feats[lvl]["text"][rows].unsqueeze(1), pt.view(*p.shape[:2], pt.shape[-1])], 1))
        feats["discrimination"] = {"image": torch.cat(d_img), "texts": torch.cat(d_txt)}  # (B, D), (B, 1 + K, D)
    return loss_fn(feats, out["logit_scale"].float(), out["logit_bias"].float())


@contextlib.contextmanager
def weights_only_loading():
    """Every ``torch.load`` inside loads with ``weights_only=True``, so a checkpoint folder copied in
    from elsewhere cannot run code on resume (it fails to load instead). DeepSpeed's checkpoint
    engine asks for ``weights_only=False``; torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides it.
    Allowed besides tensors and plain Python: numpy's RNG state (``rng_rank<r>.pt``) and, when
    DeepSpeed runs, the three classes its ZeRO optimizer states hold."""
    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np._core.multiarray._reconstruct]
    if "deepspeed" in sys.modules:
        from deepspeed.runtime.fp16.loss_scaler import LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed += [LossScaler, ZeroStageEnum, fragment_address]
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        with torch.serialization.safe_globals(allowed):
            yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---------------------------------------------------------------------------------- export
def git_commit(repo: Path = REPO) -> str:
    """HEAD of the repository the trainer runs from ("-dirty" with uncommitted changes to tracked
    files), or "unknown" outside a git checkout."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _metric_lines(metrics: dict, prefix: str, levels: list[str], why_none: dict[str, str]) -> list[str]:
    """One line per level: R@1/5/10 both ways and n, or why the level has none."""
    lines = []
    for lvl in LEVELS:
        m = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith(f"{prefix}/{lvl}/")}
        if m:
            recalls = ", ".join(f"{d}_r{k} {m[f'{d}_r{k}']:.4f}" for d in ("i2t", "t2i") for k in (1, 5, 10))
            lines.append(f"| {lvl} | {int(m['n'])} | {recalls} |")
        else:
            why = why_none.get(lvl) or (f"not trained in this run (levels: {', '.join(levels)})" if lvl not in levels
                                        else f"no {lvl} pairs in this split")
            lines.append(f"| {lvl} | 0 | none: {why} |")
    return ["| level | pairs | recall (each pair's own text is its only positive) |", "|---|---|---|", *lines]


def training_tables(data_dir: str | Path):
    """The train run's dataset inputs: the shards' manifest (the corpus stage's
    ``manifest.parquet`` beside the shard folder; for shards made elsewhere, sha256 and pairs per
    shard from ``sizes.json``) and the articles in each shard (None without the corpus tables)."""
    import pandas as pd

    from panel2patch.corpus.lineage import corpus_articles

    data_dir = Path(data_dir)
    corpus_dir = data_dir.parent
    if (corpus_dir / "manifest.parquet").is_file() and (corpus_dir / "shards").resolve() == data_dir.resolve():
        shards = pd.read_parquet(corpus_dir / "manifest.parquet")
        return shards, corpus_articles(corpus_dir)
    man = D.manifest(data_dir)
    shards = pd.DataFrame([{"shard": n, "path": str(data_dir / n), "sha256": v["sha256"], "pairs": v["pairs"]}
                           for n, v in man["shards"].items()], columns=["shard", "path", "sha256", "pairs"])
    return shards, None


def model_card(cfg: dict, manifest: dict, metrics: dict, step: int, world: int, *, test_metrics: dict | None = None,
               test_none: str | None = None, licences: dict | None = None, commit: str = "unknown",
               run_id: str | None = None, weights_sha256: str | None = None) -> str:
    """The README.md of the exported folder: how to load it (open_clip, transformers, ours), data
    (manifest digest, licences of the training pairs), run config, git commit, MLflow run id,
    weights sha256, validation and test recall per level."""
    levels = list(cfg["levels"])
    lines = [
        "---", "library_name: open_clip", "license: apache-2.0", "tags: [clip, biomedical, panel2patch]", "---", "",
        f"# panel2patch {cfg['model']} ({'+'.join(levels)}, schedule {cfg['schedule']})", "",
        "Granularity-aware image-text model trained with `python -m panel2patch.train.main`.", "",
        "## Use", "",
        "```python",
        "import open_clip",
        "model, _, preprocess = open_clip.create_model_and_transforms('local-dir:<this folder>')",
        "tokenizer = open_clip.get_tokenizer('local-dir:<this folder>')",
        "# the text encoder alone (no projection into the joint space):",
        "from transformers import AutoModel, AutoTokenizer",
        "text = AutoModel.from_pretrained('<this folder>/text', add_pooling_layer=False)  # BERT: no pooler head was trained",
        "tok = AutoTokenizer.from_pretrained('<this folder>/text')",
        "# panel2patch: panel2patch.model.build_model(None, init='path:<this folder>')",
        "```", "",
        "open_clip reads the text tower's architecture from `text_cfg.hf_model_name` in `open_clip_config.json`, the",
        "absolute path of `text/` when the folder was written; after moving the folder run",
        "`python -c \"from panel2patch.model import repoint_open_clip_folder as r; r('<new place>')\"`",
        "(or set `hf_model_name` / `hf_tokenizer_name` to a hub id holding `text/` before uploading).", "",
        "## Provenance", "",
        f"- git commit: `{commit}`",
        f"- MLflow run id: `{run_id}`" if run_id else "- MLflow run id: none (MLflow was disabled for this run)",
        f"- `open_clip_model.safetensors` sha256: `{weights_sha256}`" if weights_sha256 else "- weights sha256: not computed",
        "",
        "## Data", "",
        f"- data manifest digest (sha256 over sizes.json and every shard's sha256): `{manifest['digest']}`",
        f"- sizes.json sha256: `{manifest['sizes_sha256']}`; {len(manifest['shards'])} shards, "
        f"{sum(v['pairs'] for v in manifest['shards'].values())} pairs", "",
        "Licences of the training pairs (train split, all levels in the shards; the run trained on the levels "
        f"{', '.join(levels)}):", "",
    ]
    if licences:
        lines += ["| licence | figure | panel | patch | total |", "|---|---|---|---|---|"]
        lines += [f"| {lic} | {c.get('figure', 0)} | {c.get('panel', 0)} | {c.get('patch', 0)} | {sum(c.values())} |"
                  for lic, c in licences.items()]
    else:
        lines.append("- unknown (no training pairs read)")
    lines += [
        "", "## Training", "",
        f"- optimizer steps: {step}; world size {world}; micro batch {cfg['micro_batch']} x accum {cfg['grad_accum']} x "
        f"world {world} = {cfg['micro_batch'] * cfg['grad_accum'] * world} pairs per step",
        f"- lr {cfg['lr']}, wd {cfg['wd']}, loss weights {json.dumps(cfg['weights'])}, seed {cfg['seed']}",
        f"- engine: {'DeepSpeed ' + Path(cfg['deepspeed']).name if cfg['use_deepspeed'] else 'plain torch / DDP'}", "",
        "Run config:", "", "```yaml", yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "",
        "## Validation (last, val split)", "",
        *_metric_lines(metrics, "val", levels, {}), "",
        "## Test (test split, final weights)", "",
        *_metric_lines(test_metrics or {}, "test", levels, {lvl: test_none for lvl in LEVELS} if test_none else {}),
    ]
    return "\n".join(lines) + "\n"


def fp32_state_dict(engine, ckpt_dir: Path, use_ds: bool) -> dict | None:
    """Full fp32 weights on rank 0 (None elsewhere): from the ZeRO checkpoint's fp32 master
    partitions (bf16 module weights would lose precision), else the module."""
    if not use_ds:
        return {k: v.float() for k, v in engine.module.state_dict().items()} if dist_utils.is_main() else None
    if not dist_utils.is_main():
        return None
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    sd = get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir.parent), tag=ckpt_dir.name)
    # buffers (position_ids ...) are not in the fp32 partitions: take them from the module
    for k, v in engine.module.state_dict().items():
        if k not in sd:
            sd[k] = v if not v.is_floating_point() else v.float()
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


# ------------------------------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m panel2patch.train.main", description=__doc__.split("\n")[0])
    ap.add_argument("--config", help="run config YAML (config/train/*.yaml)")
    ap.add_argument("--data", help="shard folder (overrides the config's data)")
    ap.add_argument("--output-dir", help="overrides output_dir")
    ap.add_argument("--no-deepspeed", action="store_true", help="plain torch / DDP instead of DeepSpeed")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (YAML value)")
    ap.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # deepspeed launcher
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = load_run_config(args.config, args.set)
    if args.data:
        cfg["data"] = args.data
    if args.output_dir:
        cfg["output_dir"] = args.output_dir
    if args.no_deepspeed:
        cfg["use_deepspeed"] = False
    if not cfg["output_dir"]:
        cfg["output_dir"] = f"results/train/{Path(args.config).stem if args.config else 'run'}"
    if not cfg["data"]:
        raise SystemExit("no data: set data in the config or pass --data")
    use_ds = bool(cfg["use_deepspeed"])
    if cfg["threads"]:
        torch.set_num_threads(int(cfg["threads"]))

    rank, local_rank, world, device = dist_utils.init(use_deepspeed=use_ds)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s rank{rank} %(name)s: %(message)s")
    print(f"rank {rank}/{world} local {local_rank} on {socket.gethostname()} ({device}, pid {os.getpid()})",
          file=sys.stderr, flush=True)  # every rank, once: who ran where
    out_dir = Path(cfg["output_dir"])
    ckpt_dir = out_dir / "checkpoints"
    if rank == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()

    # --- model, loss, optimizer (same init on every rank; then per-rank RNG for dropout)
    from panel2patch.model.clip import build_model

    torch.manual_seed(cfg["seed"])
    model = build_model(cfg["model"], init=cfg["init"])
    if cfg["freeze_vision_except_last"] is not None:
        model.freeze_vision_except_last(int(cfg["freeze_vision_except_last"]))
    tokenizer = model.tokenizer()
    transform = model.image_transform(train=False)  # deterministic: resume replays batches exactly
    loss_fn = GranularityLoss({"weights": cfg["weights"]})
    torch.manual_seed(cfg["seed"] + rank)
    np.random.seed(cfg["seed"] + rank)
    random.seed(cfg["seed"] + rank)

    # which terms get inputs (weight 0: none built, nothing computed)
    use_mgll = loss_fn.weights["mgll"] > 0 or loss_fn.weights["mgll_kl"] > 0
    perturb_k = int(cfg["perturb_k"]) if loss_fn.weights["discrimination"] > 0 else 0
    if not use_mgll:  # logit_bias feeds only MGLL's BCE (DDP raises on parameters without a gradient)
        model.logit_bias.requires_grad_(False)
    if use_ds:
        # DeepSpeed 0.19.8 broadcasts parameters as ``p.data.view(torch.uint8)``, which fails for
        # 0-dim bf16 tensors (logit_scale, logit_bias): train them as shape (1,) (they broadcast
        # the same in the losses); the export reshapes them back to the open_clip layout.
        for p in model.parameters():
            if p.dim() == 0:
                p.data = p.data.reshape(1)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]  # norms, biases, scale
    # fused: one kernel over all tensors (CPU and CUDA); torch's default on CPU is a Python loop
    # over the ~100 parameter tensors, ~4x slower for the tiny model (benchmarks/train_speed.py)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["wd"]}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=1e-6, fused=True)
    pairs_per_step = cfg["micro_batch"] * cfg["grad_accum"] * world
    est_steps_per_epoch = max(1, D.count_pairs(cfg["data"], "train") // pairs_per_step)
    total_steps = cfg["max_steps"] or cfg["epochs"] * est_steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg["warmup_steps"], total_steps))

    ds_config = ds_config_for(cfg, world) if use_ds else None
    if use_ds:
        import deepspeed

        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        device = engine.device
    else:
        model.to(device)
        engine = PlainEngine(model, optimizer, scheduler, cfg["grad_accum"], 1.0, world)
    bf16 = engine.bfloat16_enabled()

    # --- resume
    step, epoch, consumed = 0, 0, 0  # optimizer steps, epoch, micro batches consumed in this epoch
    if (ckpt_dir / "latest").is_file():
        with weights_only_loading():
            path, client = engine.load_checkpoint(str(ckpt_dir))
            if path is None:
                raise RuntimeError(f"could not load the checkpoint named by {ckpt_dir / 'latest'}")
            step, epoch, consumed = client["step"], client["epoch"], client["consumed"]
            tag_dir = ckpt_dir / (ckpt_dir / "latest").read_text().strip()
            set_rng_state(torch.load(tag_dir / f"rng_rank{rank}.pt", weights_only=True))
        log.info("resumed from %s: step %d, epoch %d, %d batches into it", tag_dir, step, epoch, consumed)

    # --- tracking (rank 0)
    stack = contextlib.ExitStack()
    run = None
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "run_config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        if ds_config:
            (out_dir / "ds_config.json").write_text(json.dumps(ds_config, indent=2))
        if cfg["mlflow"]["enabled"]:
            import mlflow

            from panel2patch.tracking import stage_run

            m = cfg["mlflow"]
            params = {"run": cfg, "world_size": world, "resumed_from_step": step}
            if ds_config:
                params["ds"] = ds_config
            run = stack.enter_context(stage_run("train", m["name"] or out_dir.name, params, m["results_dir"],
                                                {"uri": m["uri"], "experiment": m["experiment"]}))
            mlflow.log_dict(cfg, "run_config.json")
            if ds_config:
                mlflow.log_dict(ds_config, "ds_config.json")
            shards, articles = training_tables(cfg["data"])
            run.log_manifest(shards, "corpus-shards", context="training")
            if articles is not None:
                run.log_manifest(articles, "corpus-articles", context="training")
    metrics_file = open(out_dir / "metrics.jsonl", "a") if rank == 0 else None

    def log_metrics(metrics: dict, at: int) -> None:
        if rank != 0:
            return
        metrics_file.write(json.dumps({"step": at, **metrics}) + "\n")
        metrics_file.flush()
        if run is not None:
            run.log_metrics(metrics, step=at)

    def save(tag_step: int) -> Path:
        tag = f"step{tag_step:08d}"
        (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
        torch.save(rng_state(), ckpt_dir / tag / f"rng_rank{rank}.pt")  # before `latest` moves
        dist_utils.barrier()
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state={"step": tag_step, "epoch": epoch, "consumed": consumed})
        dist_utils.barrier()
        if rank == 0:  # keep the newest few
            old = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir())[: -max(1, cfg["keep_checkpoints"])]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        kill_at = os.environ.get("P2P_TEST_KILL_AT_STEP")  # tests: a kill -9 right after a checkpoint
        if kill_at and int(kill_at) == tag_step:
            os.kill(os.getpid(), signal.SIGKILL)
        return ckpt_dir / tag

    def encode(images, ids):
        images = images.to(device, torch.bfloat16 if bf16 else torch.float32)
        out = engine(images=images, ids=ids.to(device))
        return out["image_features"], out["text_features"]

    def validate(at: int, split: str = "val") -> dict:
        engine.eval()
        batches = D.iterate_split(cfg["data"], split, transform, tokenizer, cfg["eval_batch"], cfg["levels"])
        with torch.no_grad():
            m = {k.replace("val/", f"{split}/", 1): v for k, v in evaluate(encode, batches, cfg["levels"]).items()}
        engine.train()
        log_metrics(m, at)
        log.info("%s at step %d: %s", "validation" if split == "val" else split, at, {k: round(v, 3) for k, v in m.items()})
        return m

    # --- loop
    levels = list(cfg["levels"])
    micro_step = step * cfg["grad_accum"]  # schedule index (alternate cycles levels per micro batch)
    val_metrics: dict = {}
    last_losses: list[float] = []
    engine.train()
    done = cfg["max_steps"] is not None and step >= cfg["max_steps"]
    t0 = time.perf_counter()
    while not done and epoch < cfg["epochs"]:
        pipe = D.make_pipeline(cfg["data"], "train", transform, tokenizer, cfg["micro_batch"], levels,
                               epoch=epoch, seed=cfg["seed"], perturb_k=perturb_k)
        it = iter(D.make_loader(pipe, cfg["num_workers"], seed=cfg["seed"] * 1000 + epoch))
        for _ in range(consumed):  # resume: skip what this epoch already trained on
            next(it)
        acc: dict[str, float] = {}
        pairs = 0
        while True:
            batch = next(it, None)
            if not dist_utils.all_true(batch is not None):  # the ranks stop together
                break
            active = [lvl for lvl in granularity_schedule(cfg["schedule"], micro_step, levels)]
            losses = forward_batch(engine, batch, active, loss_fn, bf16, device, mgll=use_mgll)
            engine.backward(losses["loss"])
            engine.step()
            micro_step += 1
            consumed += 1
            pairs += sum(batch[lvl]["image"].shape[0] for lvl in active)
            for k, v in losses.items():
                acc[k] = acc.get(k, 0.0) + float(v.detach()) / cfg["grad_accum"]
            if micro_step % cfg["grad_accum"]:
                continue
            step += 1
            dt = time.perf_counter() - t0
            n = torch.tensor([pairs], dtype=torch.float64, device=device)
            if world > 1:  # pairs of all ranks (gloo on CPU, NCCL on GPU)
                torch.distributed.all_reduce(n)
            metrics = {f"train/{k}": v for k, v in acc.items()}
            metrics["train/samples_per_second"] = float(n.item()) / max(dt, 1e-9)
            if device.type == "cuda":
                metrics["train/gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            metrics["train/lr"] = float(scheduler.get_last_lr()[0])
            metrics["train/epoch"] = float(epoch)
            log_metrics(metrics, step)
            last_losses.append(acc["loss"])
            if rank == 0 and (step % 10 == 0 or step == 1):
                log.info("step %d epoch %d loss %.4f %.1f samples/s", step, epoch, acc["loss"],
                         metrics["train/samples_per_second"])
            acc, pairs = {}, 0
            if cfg["checkpoint_every"] and step % cfg["checkpoint_every"] == 0:
                save(step)
            t0 = time.perf_counter()
            if cfg["max_steps"] is not None and step >= cfg["max_steps"]:
                done = True
                break
        if not done:
            epoch, consumed = epoch + 1, 0
            if cfg["eval_every_epoch"]:
                val_metrics = validate(step)
            t0 = time.perf_counter()

    # --- end: final checkpoint (all ranks), validation, test, export (rank 0)
    if not val_metrics:
        val_metrics = validate(step)
    test_metrics, test_none = {}, None
    if D.count_pairs(cfg["data"], "test"):  # sizes.json lists test-* shards with pairs
        test_metrics = validate(step, "test")  # test/<level>/...: reported, never used to choose anything
    else:
        test_none = "the corpus has no test pairs (no test-* shard in sizes.json)"
    tag, latest = f"step{step:08d}", ckpt_dir / "latest"
    final_ckpt = ckpt_dir / tag if latest.is_file() and latest.read_text().strip() == tag else save(step)
    sd = fp32_state_dict(engine, final_ckpt, use_ds)
    result = {"step": step, "epoch": epoch, "world_size": world, "val": val_metrics, "test": test_metrics,
              "losses": last_losses, "output_dir": str(out_dir)}
    if rank == 0:
        from panel2patch.model.clip import Panel2PatchCLIP, load_state_dict

        export = Panel2PatchCLIP(model.cfg)
        ref = export.state_dict()
        sd = {k: v.reshape(ref[k].shape) if k in ref and v.shape != ref[k].shape and v.numel() == ref[k].numel() else v
              for k, v in sd.items()}
        load_state_dict(export, sd, source=str(final_ckpt))
        final = export.save_pretrained(out_dir / "final")
        man = D.manifest(cfg["data"])
        (final / "data_manifest.json").write_text(json.dumps(man, indent=1))
        from panel2patch.model.clip import WEIGHTS_FILE
        from panel2patch.digest import sha256_path

        weights_sha = sha256_path(final / WEIGHTS_FILE)
        (final / "README.md").write_text(model_card(
            cfg, man, val_metrics, step, world, test_metrics=test_metrics, test_none=test_none,
            licences=D.licence_counts(cfg["data"], "train"), commit=git_commit(),
            run_id=run.run_id if run is not None else None, weights_sha256=weights_sha))
        result["weights_sha256"] = weights_sha
        result["final"] = str(final)
        result["manifest_digest"] = man["digest"]
        if run is not None:
            import mlflow

            mlflow.set_tag("data.manifest_digest", man["digest"])
            mlflow.log_artifact(str(final / "README.md"))
            mlflow.log_artifact(str(final / "data_manifest.json"))
            run.log_outputs({"model": final})
            from panel2patch.model.mlflow_model import log_model, render_name

            t_log = time.perf_counter()
            registered = render_name(m["registered_model_name"], m["name"] or out_dir.name)
            info = log_model(final, registered, tags={"weights_sha256": weights_sha, "data.manifest_digest": man["digest"]})
            mlflow.set_tag("model.uri", info.model_uri)
            result["mlflow_model"] = {"model_uri": info.model_uri, "seconds": round(time.perf_counter() - t_log, 2)}
            if registered:
                version = info.registered_model_version
                mlflow.set_tag("model.registered", f"models:/{registered}/{version}")
                result["mlflow_model"]["registered"] = f"models:/{registered}/{version}"
            log.info("MLflow model %s (%s) in %.1f s", info.model_uri, result["mlflow_model"].get("registered", "not registered"),
                     result["mlflow_model"]["seconds"])
        metrics_file.close()
        (out_dir / "result.json").write_text(json.dumps(result, indent=1))
    stack.close()
    dist_utils.barrier()
    dist_utils.cleanup()
    return result


if __name__ == "__main__":
    main()
