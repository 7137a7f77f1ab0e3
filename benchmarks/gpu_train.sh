#!/usr/bin/env bash
# The DeepSpeed GPU path, end to end, and the training speed benchmark on one GPU.
#
#   bash benchmarks/gpu_train.sh [OUT_DIR]        # ~5 min on one H200
#
# 1. `python -m panel2patch.train.main` with config/train/tiny.yaml as shipped (DeepSpeed ZeRO-2,
#    bf16, every loss term: per-level CLIP, cross-level, MGLL + KL, perturbed-text discrimination)
#    on synthetic WebDataset shards, on the GPU; prints the loss curve, the export and its
#    embeddings loaded back through open_clip's `local-dir:` as a user would.
# 2. benchmarks/train_speed.py --device cuda for the tiny model and for the ~30M "small" model at
#    a GPU-sized micro batch: samples/s of ours (ZeRO-2 bf16, ZeRO-2 fp32, plain torch) against
#    open_clip's training loop (bf16 autocast), and peak GPU memory per run.
# Needs: a CUDA GPU that torch sees, and this package's Python dependencies (no downloads).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$(mktemp -d /tmp/p2p_gpu.XXXXXX)}
mkdir -p "$OUT"
export PYTHONPATH="$REPO/src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
cd "$REPO"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| deepspeed', deepspeed.__version__)"

echo "== 1. train (tiny.yaml as shipped, every loss term) on the GPU"
$PY - "$OUT/shards" <<'EOF'
import sys
from panel2patch.train.data import write_synthetic_shards
write_synthetic_shards(sys.argv[1], n_figures=256, seed=0, figures_per_shard=16)
EOF
time $PY -m panel2patch.train.main --config config/train/tiny.yaml --data "$OUT/shards" \
    --output-dir "$OUT/tiny" --set max_steps="${STEPS:-200}" --set epochs=1000 --set micro_batch=32 --set mlflow.enabled=false \
    --set num_workers=4 --set threads=4 2>&1 | grep -E "rank |step |validation|test at|DeepSpeed|ZeRO|bf16|rror" || true
$PY - "$OUT/tiny" <<'EOF'
import json, sys
from pathlib import Path
import torch, open_clip
out = Path(sys.argv[1])
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
loss = [r["train/loss"] for r in rows if "train/loss" in r]
sps = [r["train/samples_per_second"] for r in rows if "train/samples_per_second" in r][1:]
gpu = max(r.get("train/gpu_peak_gib", 0) for r in rows)
print(f"steps {len(loss)}  loss first {loss[0]:.4f} min {min(loss):.4f} last-10 mean {sum(loss[-10:]) / len(loss[-10:]):.4f}"
      f"  samples/s median {sorted(sps)[len(sps) // 2]:.0f}  peak GPU {gpu:.2f} GiB")
assert all(l == l for l in loss), "NaN loss"
model, _, pre = open_clip.create_model_and_transforms(f"local-dir:{out / 'final'}")
tok = open_clip.get_tokenizer(f"local-dir:{out / 'final'}")
with torch.no_grad():
    t = model.encode_text(tok(["arrow on a fluorescence micrograph", "MRI of the head"]))
print("open_clip local-dir load of the GPU-trained export: text", tuple(t.shape), "finite", bool(torch.isfinite(t).all()))
EOF

echo "== 2. speed: tiny model"
$PY benchmarks/train_speed.py --device cuda --skip-memory --model tiny --micro 128 --steps 30 --figures 512 --workers 6 \
    | tee "$OUT/speed_tiny.txt" | grep -E "^samples/s|gpu_peak|device"
echo "== 2. speed: small model (~30M parameters)"
$PY benchmarks/train_speed.py --device cuda --skip-memory --model small --micro 256 --steps 30 --figures 512 --workers 6 \
    | tee "$OUT/speed_small.txt" | grep -E "^samples/s|gpu_peak|device"
echo "done: $OUT"
