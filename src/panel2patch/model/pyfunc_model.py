"""The exported model as an MLflow pyfunc: rows of text or image bytes -> L2-normalised embeddings.

This file is logged as the model's code ("models from code", :func:`mlflow.pyfunc.log_model` with
``python_model=<this file>``) and runs wherever the model is loaded, so it imports nothing from
panel2patch: the model folder (artifact ``model``, an open_clip ``local-dir:`` folder written by
``Panel2PatchCLIP.save_pretrained``) is loaded with open_clip's public API, its text tower taken
from the folder's own ``text/`` wherever the artifact now lies. Logged and registered by
:func:`panel2patch.model.mlflow_model.log_model`.

Input: a DataFrame with a ``text`` column (str) and/or an ``image`` column (encoded image bytes:
PNG, JPEG, ...); each row holds exactly one of them. Output: ``(rows, embed_dim)`` float32, one
L2-normalised embedding per row in the joint space (a text row's text embedding, an image row's
image embedding), so ``image_embedding @ text_embedding`` is the cosine similarity.

    model = mlflow.pyfunc.load_model("models:/panel2patch-tiny/1")
    emb = model.predict(pd.DataFrame({"text": ["arrows mark the duct", "kidney section"]}))
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

MODEL_ARTIFACT = "model"  # artifacts key of the model folder


class Panel2PatchEmbedder(mlflow.pyfunc.PythonModel):
    batch_size = 32

    def load_context(self, context):
        import open_clip
        import torch

        folder = Path(context.artifacts[MODEL_ARTIFACT])
        cfg = json.loads((folder / "open_clip_config.json").read_text())
        # the config names the text tower by the absolute path it had when exported: use this copy's
        text = str(folder / "text")
        text_cfg = {**cfg["model_cfg"]["text_cfg"], "hf_model_name": text, "hf_tokenizer_name": text}
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", text_cfg=text_cfg)
        self.model.eval()
        self.embed_dim = int(cfg["model_cfg"]["embed_dim"])
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        self._torch = torch

    def _encode(self, items: list, image: bool) -> np.ndarray:
        from PIL import Image

        torch, out = self._torch, []
        with torch.no_grad():
            for i in range(0, len(items), self.batch_size):
                chunk = items[i : i + self.batch_size]
                if image:
                    x = torch.stack([self.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in chunk])
                    out.append(self.model.encode_image(x, normalize=True))
                else:
                    out.append(self.model.encode_text(self.tokenizer([str(t) for t in chunk]), normalize=True))
        return torch.cat(out).float().numpy()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        df = pd.DataFrame(model_input)
        text = df["text"] if "text" in df else pd.Series([None] * len(df), index=df.index)
        image = df["image"] if "image" in df else pd.Series([None] * len(df), index=df.index)
        has_text, has_image = text.notna().to_numpy(), image.notna().to_numpy()
        if (has_text == has_image).any():
            bad = int(np.flatnonzero(has_text == has_image)[0])
            raise ValueError(f"row {bad}: give exactly one of 'text' and 'image' per row")
        out = np.zeros((len(df), self.embed_dim), dtype=np.float32)
        if has_text.any():
            out[has_text] = self._encode(list(text[has_text]), image=False)
        if has_image.any():
            out[has_image] = self._encode(list(image[has_image]), image=True)
        return out


mlflow.models.set_model(Panel2PatchEmbedder())
