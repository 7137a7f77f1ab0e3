"""Decode a figure image safely and write it as RGB PNG or JPEG at its original size."""

from __future__ import annotations

import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

from ..digest import sha256_file
from .tables import SkipError

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never half an image


class ImageSkip(SkipError):
    """The image cannot be used (unreadable, or a decompression bomb)."""


@dataclass
class SavedImage:
    path: Path
    format: str  # "png" | "jpeg"
    width: int
    height: int
    sha256: str


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB view of any PIL mode: alpha flattened on white, 16-bit scaled, CMYK/palette converted."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img if img.mode == "RGB" else img.convert("RGB")


@contextmanager
def pixel_limit(max_pixels: int):
    """PIL's decompression-bomb limit set to ``max_pixels`` inside the block. PIL's own default
    (89,478,485 pixels; an error above twice that) would otherwise cap a configured
    ``max_image_pixels`` whatever its value. PIL's limit is process-wide: the stages decode one
    image at a time."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Open and fully decode the first frame of an image, or raise :class:`ImageSkip` (more than
    ``max_pixels`` pixels: ``decompression-bomb``)."""
    path = Path(path)
    try:
        with warnings.catch_warnings(), pixel_limit(max_pixels):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageSkip("decompression-bomb", f"{path.name}: {w}x{h} = {w * h} pixels > max_image_pixels {max_pixels}")
                img.seek(0)
                img.load()
                decoded = img.copy()
                decoded.format = img.format  # copy() forgets it; save_figure_image needs it
                return decoded
    except ImageSkip:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageSkip("decompression-bomb", f"{path.name}: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        raise ImageSkip("unreadable-image", f"{path.name}: {type(exc).__name__}: {exc}") from None


def save_figure_image(src: str | Path | Image.Image, dest_stem: str | Path, max_pixels: int) -> SavedImage:
    """Normalise ``src`` to RGB and write ``<dest_stem>.jpg`` (RGB JPEG sources, bytes copied unchanged)
    or ``<dest_stem>.png`` (everything else, lossless). Never resizes."""
    dest_stem = Path(dest_stem)
    dest_stem.parent.mkdir(parents=True, exist_ok=True)
    img = src if isinstance(src, Image.Image) else open_image(src, max_pixels)
    if not isinstance(src, Image.Image) and img.format == "JPEG" and img.mode == "RGB":
        out, fmt = dest_stem.with_name(dest_stem.name + ".jpg"), "jpeg"
        shutil.copyfile(src, out)
    else:
        out, fmt = dest_stem.with_name(dest_stem.name + ".png"), "png"
        tmp = out.with_name(out.name + ".tmp")
        to_rgb(img).save(tmp, format="PNG", compress_level=6)
        tmp.replace(out)
    return SavedImage(path=out, format=fmt, width=img.width, height=img.height, sha256=sha256_file(out))
