"""Log an exported model folder to the active MLflow run as an MLflow pyfunc model, with a
signature, and register it (the train stage calls :func:`log_model` at the end of a run).

The pyfunc (:mod:`panel2patch.model.pyfunc_model`, logged as code) embeds texts and images with
open_clip alone, so ``mlflow.pyfunc.load_model("models:/<name>/<version>")`` needs torch,
open_clip_torch, transformers and Pillow (pinned in the model's requirements at the versions that
trained it), not panel2patch.

Signature::

    inputs   text: string (optional), image: binary (optional; encoded image bytes)
             -- one of the two per row
    outputs  float32 tensor (-1, embed_dim): L2-normalised embeddings in the joint space
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import numpy as np

CODE = Path(__file__).with_name("pyfunc_model.py")  # read by MLflow as code, never imported here
MODEL_ARTIFACT = "model"  # as pyfunc_model.MODEL_ARTIFACT
# what the pyfunc imports; listed here so MLflow does not infer them by loading the model in a
# subprocess (seconds, and it would import the whole training stack)
REQUIREMENTS = ("torch", "open_clip_torch", "transformers", "safetensors", "pillow", "pandas", "numpy")


def signature(embed_dim: int):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    inputs = Schema([ColSpec("string", "text", required=False), ColSpec("binary", "image", required=False)])
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, embed_dim))]))


def requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def render_name(template: str | None, run: str) -> str | None:
    """``tracking.registered_model_name`` with ``{run}`` (the run config name) filled in; None
    or "" = do not register."""
    return template.format(run=run) if template else None


def log_model(folder: str | Path, registered_model_name: str | None = None, name: str = "model",
              tags: dict | None = None):
    """Log ``folder`` (``save_pretrained`` output) to the active run as the pyfunc model ``name``
    and register it as ``registered_model_name`` (None: logged, not registered). Returns MLflow's
    ModelInfo (``model_uri``, ``registered_model_version``)."""
    import warnings

    import mlflow

    folder = Path(folder)
    embed_dim = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["embed_dim"]
    with warnings.catch_warnings():
        # no input_example on purpose: with one MLflow loads the model and runs it while logging (seconds)
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(CODE),
            artifacts={MODEL_ARTIFACT: str(folder)},
            signature=signature(embed_dim),
            pip_requirements=requirements(),
            registered_model_name=registered_model_name,
            tags=tags,
        )
