"""The pretraining trainer: real runs of the tiny model on CPU over synthetic WebDataset shards.

The slow tests start real processes (``python -m torch.distributed.run`` / ``python -m
panel2patch.train.main``) with DeepSpeed ZeRO-2 + bf16 over gloo.  The first DeepSpeed run on a
machine compiles its ``deepspeed_shm_comm`` op with g++/ninja into ~/.cache/torch_extensions
(``init_distributed``): ~25-35 s on an idle machine, up to ~100 s on a loaded 2-core one; later
runs load it in < 1 s.  No optimizer is named in the ds_configs, so fused_adam is never compiled.
Warm, the whole file takes about 2.5 minutes on 2 cores.

Resume (test b) is checked with ONE process: a kill -9 (the trainer sends SIGKILL to itself via
``P2P_TEST_KILL_AT_STEP`` right after the step-2 checkpoint, so the point is deterministic) and a
rerun give bit-identical final weights to an uninterrupted run.  The same holds in principle for
2 processes (each rank saves its own RNG states) but is not tested, to keep the file short.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from panel2patch.train import data as D
from panel2patch.train.distributed import first_host, slurm_env
from panel2patch.train.evaluate import recall_at_k
from panel2patch.train.main import ds_config_for, load_run_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "config" / "train" / "tiny.yaml"
FIGURE_ONLY = REPO / "config" / "train" / "tiny_figure_only.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    D.write_synthetic_shards(out, n_figures=24, seed=0, figures_per_shard=2)  # 9 train + 3 val shards
    return out


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_", "SLURM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "P2P_MLFLOW_PARENT": ""})
    env.update(extra)
    return env


def _train(args: list[str], tmp: Path, nproc: int = 1, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    if nproc > 1:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
               "-m", "panel2patch.train.main", *args]
    else:
        cmd = [sys.executable, "-m", "panel2patch.train.main", *args]
    return subprocess.run(cmd, cwd=tmp, env=_env(tmp, **env), capture_output=True, text=True, timeout=timeout)


def _losses(out_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r]


# ------------------------------------------------------------------------------------ fast
def test_synthetic_shards_format_and_collate(shards):
    sizes = json.loads((shards / "sizes.json").read_text())
    assert all((shards / n).is_file() for n in sizes) and sum(sizes.values()) == D.count_pairs(shards, "train") + D.count_pairs(shards, "val")
    tok = lambda texts: torch.zeros((len(texts), 8), dtype=torch.long)  # noqa: E731
    pipe = D.make_pipeline(shards, "train", lambda im: torch.zeros(3, 8, 8), tok, 12)
    batch = next(iter(pipe))
    assert batch["n"] == 12 and set(batch) == {"figure", "panel", "patch", "n"}
    assert sum(batch[lvl]["image"].shape[0] for lvl in D.LEVELS) == 12
    fig, pan, pat = batch["figure"], batch["panel"], batch["patch"]
    # a figure's pairs are consecutive and come first: the panels' figures are in the batch
    assert set(pan["figure_id"].tolist()) <= set(fig["figure_id"].tolist())
    assert (pat["parent_id"] == pat["panel_id"]).all() and (pan["parent_id"] == pan["figure_id"]).all()
    assert D.hash_id("PMC1") == D.hash_id("PMC1") >= 0 and D.hash_id(None) == -1
    assert len(D.manifest(shards)["digest"]) == 64


def test_recall_at_k():
    x = torch.eye(4)
    r = recall_at_k(x, x)
    assert r["i2t_r1"] == r["t2i_r1"] == 1.0
    r = recall_at_k(x, x[[1, 0, 2, 3]])
    assert r["i2t_r1"] == 0.5 and r["i2t_r5"] == 1.0


def test_ds_config_batch_numbers_follow_run_config():
    cfg = load_run_config(TINY, ["micro_batch=4", "grad_accum=3"])
    ds = ds_config_for(cfg, world=2)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 3, 24)
    assert "optimizer" not in ds and ds["zero_optimization"]["stage"] == 2
    assert load_run_config(FIGURE_ONLY)["levels"] == ["figure"]
    with pytest.raises(ValueError):
        load_run_config(TINY, ["levels=[figure, pixel]"])


# (d) srun -> torch.distributed variables
def test_slurm_env_mapping(monkeypatch):
    fake = {"SLURM_PROCID": "3", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
            "SLURM_JOB_NODELIST": "gpu[003-004,017]", "SLURM_JOB_ID": "123456"}
    env = slurm_env(fake)
    assert env == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu003",
                   "MASTER_PORT": str(20000 + 123456 % 20000)}
    assert slurm_env({**fake, "MASTER_ADDR": "h", "MASTER_PORT": "1"}) == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    assert slurm_env({**fake, "RANK": "0"}) == {}  # torchrun / deepspeed launcher already set it
    assert slurm_env({}) == {}
    # without scontrol on PATH: the built-in parser
    import panel2patch.train.distributed as d

    def no_scontrol(*a, **k):
        raise OSError("no scontrol")

    monkeypatch.setattr(d.subprocess, "run", no_scontrol)
    assert first_host("node7") == "node7"
    assert first_host("a[10-12],b3") == "a10"
    assert first_host("x1,x2") == "x1"


# ------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_two_ranks_zero2_loss_falls_and_logs_to_mlflow(shards, tmp_path):
    """(a) torchrun, 2 processes, ZeRO-2 + bf16: 3 epochs (3 steps each), loss falls, metrics in MLflow."""
    out = tmp_path / "run"
    res = _train(["--config", str(TINY), "--data", str(shards), "--output-dir", str(out),
                  "--set", "epochs=3", "--set", "checkpoint_every=0", "--set", f"mlflow.results_dir={tmp_path}"],
                 tmp_path, nproc=2)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    rows = _losses(out)
    epochs = {}
    for r in rows:
        epochs.setdefault(r["train/epoch"], []).append(r["train/loss"])
    assert len(epochs) == 3
    first, last = (sum(v) / len(v) for v in (epochs[0.0], epochs[2.0]))
    assert last < first, epochs
    assert json.loads((out / "ds_config.json").read_text())["train_batch_size"] == 32  # 16 x 1 x 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1  # rank 0 only
    run = runs[0]
    for key in ("train/loss", "train/clip/figure", "train/clip/panel", "train/clip/patch", "train/cross/panel/image",
                "train/samples_per_second", "val/figure/i2t_r1", "val/panel/t2i_r5", "val/patch/i2t_r10"):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == len(rows)
    assert run.data.params["ds.zero_optimization.stage"] == "2" and run.data.params["world_size"] == "2"

    # the export loads back, and names the data manifest
    from panel2patch.model.clip import build_model

    model = build_model(None, init=f"path:{out / 'final'}")
    assert D.manifest(shards)["digest"] in (out / "final" / "README.md").read_text()
    assert model.encode_image(torch.zeros(1, 3, 64, 64)).shape == (1, 64)


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_weights(shards, tmp_path):
    """(b) single process, ZeRO-2 + bf16: SIGKILL after the step-2 checkpoint, rerun -> same weights."""
    from safetensors.torch import load_file

    common = ["--config", str(TINY), "--data", str(shards), "--set", "max_steps=5", "--set", "checkpoint_every=2",
              "--set", "mlflow.enabled=false", "--set", "eval_every_epoch=false"]
    full = _train([*common, "--output-dir", str(tmp_path / "full")], tmp_path)
    assert full.returncode == 0, full.stderr[-5000:]
    killed = _train([*common, "--output-dir", str(tmp_path / "resumed")], tmp_path, P2P_TEST_KILL_AT_STEP="2")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (tmp_path / "resumed" / "checkpoints" / "latest").read_text().strip() == "step00000002"
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = _train([*common, "--output-dir", str(tmp_path / "resumed")], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert "resumed from" in resumed.stderr
    a = load_file(str(tmp_path / "full" / "final" / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=0), k
    la, lb = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert [r["train/loss"] for r in la] == [r["train/loss"] for r in lb]  # steps 1-2 logged before the kill


@pytest.mark.slow
def test_figure_only_ablation_runs(shards, tmp_path):
    """(c) the ablation config: only figure pairs reach the model, only the figure CLIP term."""
    out = tmp_path / "ablation"
    res = _train(["--config", str(FIGURE_ONLY), "--data", str(shards), "--output-dir", str(out),
                  "--set", "max_steps=2", "--set", "micro_batch=4", "--set", "mlflow.enabled=false"], tmp_path)
    assert res.returncode == 0, res.stderr[-5000:]
    rows = _losses(out)
    assert len(rows) == 2
    assert {k for k in rows[0] if k.startswith(("train/clip", "train/cross"))} == {"train/clip/figure"}
    result = json.loads((out / "result.json").read_text())
    assert set(result["val"]) == {f"val/figure/{d}_r{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)} | {"val/figure/n"}


@pytest.mark.slow
def test_zero3_config_trains_and_exports(shards, tmp_path):
    """ZeRO-3 + bf16 (one process): trains, and the export gathers full fp32 weights."""
    out = tmp_path / "z3"
    res = _train(["--config", str(TINY), "--data", str(shards), "--output-dir", str(out), "--set", "max_steps=2",
                  "--set", "micro_batch=8", "--set", "mlflow.enabled=false", "--set", "deepspeed=config/deepspeed/zero3_bf16.json"],
                 tmp_path)
    assert res.returncode == 0, res.stderr[-5000:]
    assert json.loads((out / "ds_config.json").read_text())["zero_optimization"]["stage"] == 3
    from panel2patch.model.clip import build_model

    model = build_model(None, init=f"path:{out / 'final'}")
    assert model.logit_scale.dim() == 0 and model.visual.conv1.weight.dtype == torch.float32
