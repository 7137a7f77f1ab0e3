"""Training speed and memory of our trainer against open_clip's training loop (CPU or GPU).

    python benchmarks/train_speed.py                       # tiny model, synthetic shards, ~3 min on 2 cores
    python benchmarks/train_speed.py --model small --steps 12 --figures 48
    python benchmarks/train_speed.py --skip-memory --repeat 3   # speed only, median of 3 rounds
    python benchmarks/train_speed.py --device cuda --model small --micro 256 --steps 30 --figures 512 --workers 8

On ``--device cuda`` every variant runs on the GPU (the trainer picks CUDA when torch sees one; the
open_clip loop autocasts to bf16, open_clip_train's ``--precision amp_bf16``), and the peak GPU
memory of each trainer run is reported; the world-size-2 memory part needs two GPUs.

1. samples/s, one process, same model, same synthetic WebDataset shards, same micro batch:
   * ours, DeepSpeed ZeRO-2 + bf16 (config/deepspeed/zero2_bf16.json), granularity loss (mix:
     3 CLIP terms + 4 cross-level terms with ``--loss clip_cross``, the default, the work closest
     to open_clip's; ``--loss full`` adds tiny.yaml's MGLL and perturbed-text discrimination,
     whose K = 3 perturbed texts per pair quadruple the text tower's rows);
   * ours, DeepSpeed ZeRO-2 fp32 (the same JSON with bf16 off): DeepSpeed's cost without CPU bf16;
   * ours, ``--no-deepspeed`` (plain torch, fp32), same loss;
   * open_clip's loop (fp32; bf16 autocast on ``--device cuda``): open_clip_train is not installed here (it is not on PyPI as a package of
     its own), so :func:`open_clip_train_one_epoch` reproduces ``open_clip_train.train.
     train_one_epoch`` (scheduler step per batch, forward, ``open_clip.loss.ClipLoss``, backward,
     optimizer step, logit_scale clamp to ln 100; no accumulation, fp32 on CPU where its autocast is
     a no-op) over the same batches, every level treated as plain pairs.
   samples/s counts pairs per wall second of a step including data loading; step 1 (warm-up) is
   left out.
2. Peak RSS per rank (psutil, polled every 0.1 s) at world size 2 under torchrun: ZeRO-2 + bf16,
   ZeRO-2 fp32 and plain DDP fp32.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "config" / "train" / "tiny.yaml"
SMALL = {  # ~30M parameters: 6-block ViT at 96 px, 4-layer BERT 384 wide
    "embed_dim": 256,
    "vision_cfg": {"image_size": 96, "patch_size": 16, "width": 384, "layers": 6, "head_width": 64, "mlp_ratio": 4.0},
    "text_cfg": {"hf_config": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 4,
                               "num_attention_heads": 6, "intermediate_size": 1536, "max_position_embeddings": 64},
                 "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear", "context_length": 32},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    return env


LOSSES = {  # run config overrides per --loss
    "clip_cross": ["weights={clip: 1.0, cross: 0.5, mgll: 0, mgll_kl: 0, discrimination: 0}"],
    "full": [],  # tiny.yaml's weights: + MGLL + discrimination (perturb_k 3)
}


def run_ours(data: Path, out: Path, model: str, steps: int, micro: int, nproc: int = 1, deepspeed: bool = True,
             threads: int = 1, ds_config: Path | None = None, loss: str = "clip_cross", workers: int = 0) -> dict:
    """Our trainer in subprocess(es); returns samples/s over steps 2..N (pairs / seconds, as for
    open_clip's loop) and peak RSS per rank."""
    args = ["--config", str(TINY), "--data", str(data), "--output-dir", str(out), "--set", f"model={model}",
            "--set", f"max_steps={steps}", "--set", f"micro_batch={micro}", "--set", "checkpoint_every=0",
            "--set", "mlflow.enabled=false", "--set", "eval_every_epoch=false", "--set", f"threads={threads}",
            "--set", "epochs=1000", "--set", f"num_workers={workers}"]
    for item in LOSSES[loss]:
        args += ["--set", item]
    if not deepspeed:
        args.append("--no-deepspeed")
    if ds_config:
        args += ["--set", f"deepspeed={ds_config}"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", str(_free_port()), "-m", "panel2patch.train.main", *args]
    else:
        cmd = [sys.executable, "-m", "panel2patch.train.main", *args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak: dict[int, int] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            for p in procs:
                if "panel2patch.train.main" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline()):
                    peak[p.pid] = max(peak.get(p.pid, 0), p.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    log = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"trainer failed ({proc.returncode}):\n{log[-4000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    sps = [r["train/samples_per_second"] for r in rows if "train/samples_per_second" in r][1:]
    # every step trains micro_batch pairs: pairs / total seconds is the harmonic mean of the rates
    res = {"samples_per_second": len(sps) / sum(1 / x for x in sps),
           "peak_rss_mib_per_rank": sorted(v / 2**20 for v in peak.values())}
    gpu = [r["train/gpu_peak_gib"] for r in rows if "train/gpu_peak_gib" in r]
    if gpu:
        res["gpu_peak_gib"] = max(gpu)
    return res


def open_clip_train_one_epoch(model, data, loss, epoch, optimizer, scheduler, num_batches, device):
    """open_clip_train.train.train_one_epoch (v3.x), the parts that run on one process without
    accumulation: per batch scheduler step, forward, loss dict summed, backward, step, clamp."""
    model.train()
    times = []
    end = time.perf_counter()
    for i, batch in enumerate(data):
        if i >= num_batches:
            break
        step = num_batches * epoch + i
        scheduler(step)
        images, texts = batch
        images, texts = images.to(device), texts.to(device)
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):  # amp_bf16 on GPU
            out = model(images, texts)
            losses = loss(out["image_features"], out["text_features"], out["logit_scale"], output_dict=True)
            total_loss = sum(losses.values())
        total_loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        times.append((images.shape[0], now - end))
        end = now
    return times


def _cosine_lr(optimizer, base_lr, warmup, total):
    """open_clip_train.scheduler.cosine_lr."""

    def _adjust(step):
        lr = base_lr * (step + 1) / warmup if step < warmup else \
            0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))) * base_lr
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr

    return _adjust


def run_open_clip_loop(data: Path, model_name: str, steps: int, micro: int, threads: int = 1,
                       device: str = "cpu", workers: int = 0) -> dict:
    import open_clip

    from panel2patch.model.clip import build_model
    from panel2patch.train import data as D

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name).to(device)
    tok, transform = model.tokenizer(), model.image_transform(train=False)
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
         {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": 0.05}],
        lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
    scheduler = _cosine_lr(optimizer, 1e-3, 2, steps)
    loss = open_clip.loss.ClipLoss()

    def pairs():  # the same shards and batches, levels ignored: (images, tokens)
        epoch = 0
        while True:
            pipe = D.make_pipeline(data, "train", transform, tok, micro, epoch=epoch)
            for b in D.make_loader(pipe, workers, seed=epoch):  # the same loader workers as ours
                yield (torch.cat([b[lvl]["image"] for lvl in D.LEVELS]), torch.cat([b[lvl]["ids"] for lvl in D.LEVELS]))
            epoch += 1

    times = open_clip_train_one_epoch(model, pairs(), loss, 0, optimizer, scheduler, steps, torch.device(device))[1:]
    return {"samples_per_second": sum(n for n, _ in times) / sum(t for _, t in times)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny", help="tiny, or small (~30M params, written to a temp JSON)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--micro", type=int, default=16)
    ap.add_argument("--figures", type=int, default=32)
    ap.add_argument("--loss", choices=sorted(LOSSES), default="clip_cross",
                    help="clip_cross: CLIP + cross-level terms (closest to open_clip's work); full: tiny.yaml's terms")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of the speed variants (medians reported)")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: every variant on the GPU (the trainer uses CUDA whenever torch sees one)")
    ap.add_argument("--workers", type=int, default=0, help="data loader worker processes per trainer rank")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU")
    if args.device == "cpu" and torch.cuda.is_available():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer subprocesses take the GPU when they see one
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from panel2patch.train.data import write_synthetic_shards

    tmp = Path(tempfile.mkdtemp(prefix="p2p_bench_"))
    data = tmp / "shards"
    write_synthetic_shards(data, n_figures=args.figures, seed=0, figures_per_shard=2)
    model = args.model
    if model == "small":
        (tmp / "small.json").write_text(json.dumps(SMALL))
        model = str(tmp / "small.json")
    res = {"model": args.model, "steps": args.steps, "micro_batch": args.micro, "threads_per_rank": 1, "loss": args.loss,
           "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__}
    # ZeRO-2 without bf16: separates DeepSpeed's cost from CPU bf16 matmul speed
    z2_fp32 = json.loads((REPO / "config" / "deepspeed" / "zero2_bf16.json").read_text())
    z2_fp32["bf16"] = {"enabled": False}
    (tmp / "zero2_fp32.json").write_text(json.dumps(z2_fp32))
    if not args.skip_speed:
        # the variants run in turn, --repeat rounds: on a shared machine the load drifts by tens of
        # percent within minutes, so each ratio is the median of per-round ratios (same round, same load)
        ours = {"ours_zero2_bf16": {}, "ours_zero2_fp32": {"ds_config": tmp / "zero2_fp32.json"},
                "ours_plain_fp32": {"deepspeed": False}}
        runs: dict[str, list[float]] = {k: [] for k in [*ours, "open_clip_loop"]}
        for i in range(args.repeat):
            for k, kw in ours.items():
                r = run_ours(data, tmp / f"{k}_{i}", model, args.steps, args.micro, loss=args.loss, workers=args.workers, **kw)
                runs[k].append(r["samples_per_second"])
                if "gpu_peak_gib" in r:
                    res[f"{k}_gpu_peak_gib"] = r["gpu_peak_gib"]
            runs["open_clip_loop"].append(
                run_open_clip_loop(data, model, args.steps, args.micro, device=args.device, workers=args.workers)["samples_per_second"])
        for k, v in runs.items():
            res[k] = {"samples_per_second": statistics.median(v), "rounds": v}
        for k in ours:
            res[k]["ratio_to_open_clip_loop"] = statistics.median(
                [a / b for a, b in zip(runs[k], runs["open_clip_loop"])])
        print("samples/s  " + "  ".join(f"{k} {res[k]['samples_per_second']:.1f}" for k in runs) + "  ratios to open_clip: "
              + " ".join(f"{res[k]['ratio_to_open_clip_loop']:.2f}" for k in ours) + f"  (median of {args.repeat} rounds)")
    if not args.skip_memory and args.device == "cuda" and torch.cuda.device_count() < 2:
        print("memory at world size 2 skipped: it needs two GPUs, this machine has one")
    elif not args.skip_memory:
        res["world2_zero2_bf16"] = run_ours(data, tmp / "w2_ds", model, args.steps, args.micro, loss=args.loss, nproc=2)
        res["world2_zero2_fp32"] = run_ours(data, tmp / "w2_ds32", model, args.steps, args.micro, loss=args.loss, nproc=2,
                                            ds_config=tmp / "zero2_fp32.json")
        res["world2_ddp_fp32"] = run_ours(data, tmp / "w2_ddp", model, args.steps, args.micro, loss=args.loss, nproc=2, deepspeed=False)
        print("peak RSS per rank (MiB), world 2: " + "  ".join(
            f"{k} {[round(x) for x in res[k]['peak_rss_mib_per_rank']]} ({res[k]['samples_per_second']:.1f} samples/s)"
            for k in ("world2_zero2_bf16", "world2_zero2_fp32", "world2_ddp_fp32")))
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
