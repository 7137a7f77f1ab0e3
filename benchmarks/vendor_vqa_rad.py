"""Write resources/vqa-rad/: the small VQA-RAD subset the demo and the tests evaluate on.

    .venv/bin/python benchmarks/vendor_vqa_rad.py [../shared/data/vqa-rad]

VQA-RAD (Lau et al. 2018, CC0) from ../shared/data/vqa-rad: per organ (CHEST, ABD, HEAD) the
first ``PER_ORGAN`` test images and the first ``PER_ORGAN`` images with training questions only,
by name, images whose MODALITY questions state CT / MRI / X-ray first (so the modality set has
both splits); images shrunk to ``MAX_SIDE`` px (JPEG q 85), questions kept as they are (the
subset's trainset.json / testset.json hold every question of the chosen images).  Deterministic.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from panel2patch.evaluate.datasets import modality_of, vqa_rad_dir  # noqa: E402

PER_ORGAN = 5
MAX_SIDE = 224
OUT = REPO / "resources" / "vqa-rad"


def main(src: str = str(REPO.parent / "shared" / "data" / "vqa-rad")) -> None:
    d = vqa_rad_dir(src)
    tr, te = json.loads((d / "trainset.json").read_text()), json.loads((d / "testset.json").read_text())
    test_imgs = {x["image_name"] for x in te}
    organ, has_mod = {}, set()
    for x in tr + te:
        organ[x["image_name"]] = x["image_organ"].strip()
        if "MODALITY" in x["question_type"] and modality_of(x["question"], x["answer"]):
            has_mod.add(x["image_name"])
    chosen = []
    for split_test in (True, False):
        by = defaultdict(list)
        for name in sorted(organ):
            if (name in test_imgs) == split_test:
                by[organ[name]].append(name)
        for o in ("CHEST", "ABD", "HEAD"):
            chosen += sorted(by[o], key=lambda n: (n not in has_mod, n))[:PER_ORGAN]
    keep = set(chosen)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for name in sorted(keep):
        with Image.open(d / "images" / name) as im:
            im = im.convert("RGB")
            im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            im.save(OUT / "images" / name, "JPEG", quality=85)
    for fname, qa in (("trainset.json", tr), ("testset.json", te)):
        (OUT / fname).write_text(json.dumps([x for x in qa if x["image_name"] in keep], indent=1) + "\n")
    print(f"{len(keep)} images ({sum(n in test_imgs for n in keep)} test), "
          f"{sum(x['image_name'] in keep for x in tr)} train / {sum(x['image_name'] in keep for x in te)} test questions -> {OUT}")


if __name__ == "__main__":
    main(*sys.argv[1:])
