"""Image-text model for granularity-aware pretraining: architecture as JSON (``configs/``),
towers from open_clip (vision) and transformers (text).  See :mod:`panel2patch.model.clip`."""

from panel2patch.model.clip import (
    Panel2PatchCLIP,
    Tokenizer,
    build_model,
    count_parameters,
    list_configs,
    load_config,
    minilm_dir,
    repoint_open_clip_folder,
)

__all__ = ["Panel2PatchCLIP", "Tokenizer", "build_model", "count_parameters", "list_configs", "load_config", "minilm_dir", "repoint_open_clip_folder"]
