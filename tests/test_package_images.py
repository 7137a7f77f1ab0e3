"""Safe package extraction and image decoding on hostile or broken files."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from panel2patch.ingest.images import ImageSkip, open_image, save_figure_image, to_rgb
from panel2patch.ingest.package import PackageError, extract_package

LIMITS = dict(max_member_bytes=1_000_000, max_total_bytes=5_000_000, max_members=100)


def _add(tf: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tf.addfile(info, io.BytesIO(data) if info.isfile() else None)


def test_hostile_tar_members_are_refused(tmp_path):
    pkg = tmp_path / "evil.tar.gz"
    with tarfile.open(pkg, "w:gz") as tf:
        _add(tf, "PMC1/article.nxml", b"<article/>")
        _add(tf, "../escape.txt", b"escaped")
        _add(tf, "PMC1/../../escape2.txt", b"escaped")
        _add(tf, "/tmp/absolute.txt", b"abs")
        _add(tf, "PMC1/link", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        _add(tf, "PMC1/hard", type=tarfile.LNKTYPE, linkname="../../etc/passwd")
        _add(tf, "PMC1/dev", type=tarfile.CHRTYPE)
        _add(tf, "PMC1/big.bin", b"0" * 2_000_000)
    dest = tmp_path / "out"
    out = extract_package(pkg, dest, **LIMITS)
    assert [p.relative_to(dest).as_posix() for p in out.files] == ["PMC1/article.nxml"]
    refused = dict(out.refused)
    assert set(refused) == {"../escape.txt", "PMC1/../../escape2.txt", "/tmp/absolute.txt", "PMC1/link",
                            "PMC1/hard", "PMC1/dev", "PMC1/big.bin"}
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/absolute.txt").exists()
    assert all(not p.is_symlink() for p in dest.rglob("*"))


def test_hostile_zip_and_garbage(tmp_path):
    pkg = tmp_path / "evil.zip"
    with zipfile.ZipFile(pkg, "w") as zf:
        zf.writestr("ok/a.xml", "<article/>")
        zf.writestr("../../zip-escape.txt", "x")
    out = extract_package(pkg, tmp_path / "out", **LIMITS)
    assert len(out.files) == 1 and out.refused[0][0] == "../../zip-escape.txt"
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(PackageError):
        extract_package(garbage, tmp_path / "out2", **LIMITS)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_truncated_and_garbage_images(tmp_path):
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)))
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    for name in ("trunc.png", "junk.tif"):
        with pytest.raises(ImageSkip) as e:
            open_image(tmp_path / name, max_pixels=10**8)
        assert e.value.reason == "unreadable-image"


def test_decompression_bomb(tmp_path):
    Image.new("L", (3000, 3000)).save(tmp_path / "big.png")
    with pytest.raises(ImageSkip) as e:
        open_image(tmp_path / "big.png", max_pixels=1_000_000)
    assert e.value.reason == "decompression-bomb"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "CMYK", "I;16", "1", "L"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (8, 4), (10, 200, 30)).convert(mode) if mode != "I;16" else Image.new("I;16", (8, 4), 4000)
    assert to_rgb(img).mode == "RGB" and to_rgb(img).size == (8, 4)


def test_alpha_is_flattened_on_white():
    img = Image.new("RGBA", (2, 1), (255, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_rgb_jpeg_is_copied_byte_exact_and_tiff_becomes_png(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "a.jpg", quality=90)
    saved = save_figure_image(tmp_path / "a.jpg", tmp_path / "out" / "a", max_pixels=10**8)
    assert saved.format == "jpeg" and saved.path.read_bytes() == (tmp_path / "a.jpg").read_bytes()
    assert saved.sha256 == hashlib.sha256(saved.path.read_bytes()).hexdigest()
    Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8)).save(tmp_path / "b.tif")
    saved = save_figure_image(tmp_path / "b.tif", tmp_path / "out" / "b", max_pixels=10**8)
    assert saved.format == "png" and (saved.width, saved.height) == (80, 60)
    assert Image.open(saved.path).mode == "RGB"
