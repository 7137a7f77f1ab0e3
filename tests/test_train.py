"""The pretraining trainer: real runs of the tiny model on CPU over synthetic WebDataset shards.

The slow tests start real processes (``python -m torch.distributed.run`` / ``python -m
panel2patch.train.main``) with DeepSpeed ZeRO-2 + bf16 over gloo.  The first DeepSpeed run on a
machine compiles its ``deepspeed_shm_comm`` op with g++/ninja into ~/.cache/torch_extensions
(``init_distributed``): ~25-35 s on an idle machine, up to ~100 s on a loaded 2-core one; later
runs load it in < 1 s.  No optimizer is named in the ds_configs, so fused_adam is never compiled.
Warm, the slow tests took 15-75 s each on a 2-core machine shared with other jobs (about 5
minutes for the file); the fast ones about 30 s together.

Resume is checked with one process (test b) and with two under torchrun (test b2): a kill -9 (the
trainer sends SIGKILL to itself via ``P2P_TEST_KILL_AT_STEP`` right after the step-2 checkpoint,
so the point is deterministic; with 2 ranks both kill themselves and torchrun fails) and a rerun
give bit-identical final weights to an uninterrupted run with the same seed.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from panel2patch.train import data as D
from panel2patch.train.distributed import first_host, slurm_env
from panel2patch.train.evaluate import recall_at_k
from panel2patch.train.main import ds_config_for, forward_batch, load_run_config, mgll_batch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "config" / "train" / "tiny.yaml"
FIGURE_ONLY = REPO / "config" / "train" / "tiny_figure_only.yaml"
# every term tiny.yaml turns on, logged unweighted as train/<term> (GranularityLoss)
TERMS = tuple(f"train/{t}" for t in (
    "clip/figure", "clip/panel", "clip/patch", "cross/panel/image", "cross/panel/text", "cross/patch/image",
    "cross/patch/text", "mgll/soft_ce/figure", "mgll/soft_ce/panel", "mgll/soft_ce/patch", "mgll/bce/figure",
    "mgll/bce/panel", "mgll/bce/patch", "mgll/kl", "discrimination"))


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


def test_fewer_shards_than_ranks_share_whole_figures(tmp_path, monkeypatch):
    """A one-shard corpus (the demo) on 2 ranks: each rank gets every other figure, not nothing."""
    one = tmp_path / "one"
    D.write_synthetic_shards(one, n_figures=6, seed=0, figures_per_shard=8, val_fraction=0.2)
    assert len(D.shard_list(one, "train")) == 1
    tok = lambda texts: torch.zeros((len(texts), 8), dtype=torch.long)  # noqa: E731
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(D, "_rank_world", lambda r=rank: (r, 2))
        pipe = D.make_pipeline(one, "train", lambda im: torch.zeros(3, 8, 8), tok, 1, partial=True)
        seen.append([int(b[lvl]["figure_id"][0]) for b in pipe for lvl in D.LEVELS if len(b[lvl]["id"])])
    figs = [set(x) for x in seen]
    assert not figs[0] & figs[1] and (len(figs[0]), len(figs[1])) == (3, 2)  # 5 train figures, round robin
    assert len(seen[0]) + len(seen[1]) == D.count_pairs(one, "train")


def test_recall_at_k():
    x = torch.eye(4)
    r = recall_at_k(x, x)
    assert r["i2t_r1"] == r["t2i_r1"] == 1.0
    r = recall_at_k(x, x[[1, 0, 2, 3]])
    assert r["i2t_r1"] == 0.5 and r["i2t_r5"] == 1.0


def _tiny_batch(shards, perturb_k=3, n=16):
    from panel2patch.model.clip import build_model

    torch.manual_seed(0)
    model = build_model("tiny")
    pipe = D.make_pipeline(shards, "train", model.image_transform(), model.tokenizer(), n, perturb_k=perturb_k)
    return model, next(iter(pipe))


def test_collate_carries_text_ids_and_k_perturbations(shards):
    _, batch = _tiny_batch(shards)
    for lvl in D.LEVELS:
        b = batch[lvl]
        n, L = b["ids"].shape
        assert b["text_id"].shape == (n,) and (b["text_id"] >= 0).all()
        m = b["perturbed_rows"].shape[0]
        assert b["perturbed_ids"].shape == (m, 3, L) and 0 < m <= n
        # a perturbed text is never its original
        assert not (b["perturbed_ids"] == b["ids"][b["perturbed_rows"]].unsqueeze(1)).all(-1).any()
    assert D.text_key("A  Red cell.") == D.text_key("a red cell.") != D.text_key("a red cell")


def test_mgll_batch_takes_each_rows_ancestor_text_and_coarser_positives(shards):
    _, batch = _tiny_batch(shards)
    levels = list(D.LEVELS)
    D_ = 4
    feats = {lvl: {"image": torch.randn(batch[lvl]["image"].shape[0], D_),
                   "text": torch.randn(batch[lvl]["image"].shape[0], D_)} for lvl in levels}
    m = mgll_batch(feats, batch, levels, torch.device("cpu"))
    n = [batch[lvl]["image"].shape[0] for lvl in levels]
    N = sum(n)
    assert m["image"].shape == (N, D_) and set(m["texts"]) == set(levels)
    assert {g: tuple(v.shape) for g, v in m["ids"].items()} == {"figure": (3, N), "panel": (2, N), "patch": (1, N)}
    fig, pan, pat = (batch[lvl] for lvl in levels)
    # a patch's text at g = figure is its figure's caption (when that figure is in the batch), at
    # g = panel its panel's subcaption, at g = patch its own phrase
    rows_pat = slice(n[0] + n[1], N)
    for j in range(n[2]):
        f = (fig["figure_id"] == pat["figure_id"][j]).nonzero()
        want = feats["figure"]["text"][f[0, 0]] if len(f) else feats["patch"]["text"][j]
        assert torch.equal(m["texts"]["figure"][rows_pat][j], want)
        p = (pan["panel_id"] == pat["panel_id"][j]).nonzero()
        want = feats["panel"]["text"][p[0, 0]] if len(p) else feats["patch"]["text"][j]
        assert torch.equal(m["texts"]["panel"][rows_pat][j], want)
    assert torch.equal(m["texts"]["patch"], torch.cat([feats[lvl]["text"] for lvl in levels]))
    # positives coarsen with g: same figure at g = figure, same panel at g = panel (plus identical text)
    from panel2patch.train.losses import mgll_targets

    match = {g: mgll_targets(v)[0].bool() for g, v in m["ids"].items()}
    fid = torch.cat([batch[lvl]["figure_id"] for lvl in levels])
    pid = torch.cat([batch[lvl]["panel_id"] for lvl in levels])
    assert match["figure"][fid[:, None] == fid[None, :]].all()
    assert match["panel"][(pid[:, None] == pid[None, :]) & (pid >= 0)[:, None]].all()
    assert match["figure"].sum() > match["panel"].sum() > match["patch"].sum() >= N


def _fit(model, batch, weights: dict, steps: int) -> list[dict]:
    from panel2patch.train.losses import GranularityLoss

    loss_fn = GranularityLoss({"weights": weights})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    hist = []
    for _ in range(steps):
        losses = forward_batch(model, batch, list(D.LEVELS), loss_fn, False, torch.device("cpu"))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        hist.append({k: float(v.detach()) for k, v in losses.items()})
    return hist


def test_every_term_is_finite_and_falls_on_a_fixed_batch(shards):
    """forward_batch on the tiny model (no engine: the model has the same call) with tiny.yaml's
    weights: every term present and finite at every step; 8 AdamW steps on one batch lower the
    total and the MGLL panel/patch terms.  Discrimination moves little at weight 0.2 in 8 steps
    (it starts at log 4, 3 perturbations + the original), so it is checked alone: it learns."""
    torch.set_num_threads(1)
    model, batch = _tiny_batch(shards)
    hist = _fit(model, batch, load_run_config(TINY)["weights"], 8)
    assert all({f"train/{k}" for k in h} == {"train/loss", *TERMS} for h in hist)
    assert all(math.isfinite(v) for h in hist for v in h.values())
    assert hist[0]["discrimination"] == pytest.approx(math.log(4), abs=0.3)
    for k in ("loss", "mgll/soft_ce/panel", "mgll/soft_ce/patch"):
        assert hist[-1][k] < hist[0][k], (k, [h[k] for h in hist])
    assert model.logit_bias.grad is not None and model.logit_bias.grad.abs() > 0  # MGLL's BCE trains it
    # a level with no rows in a rank's batch (small micro batches): every term still computes
    empty = {**batch, "figure": {k: v[:0] for k, v in batch["figure"].items()}}
    losses = _fit(model, empty, load_run_config(TINY)["weights"], 1)[0]
    assert losses["clip/figure"] == 0 and all(math.isfinite(v) for v in losses.values())

    torch.manual_seed(0)
    from panel2patch.model.clip import build_model

    only = _fit(build_model("tiny"), batch, {"clip": 0, "cross": 0, "mgll": 0, "mgll_kl": 0, "discrimination": 1}, 12)
    assert set(only[0]) == {"loss", "discrimination"}
    assert min(h["discrimination"] for h in only[-3:]) < 0.8 * only[0]["discrimination"], [h["discrimination"] for h in only]


def test_ds_config_batch_numbers_follow_run_config():
    cfg = load_run_config(TINY, ["micro_batch=4", "grad_accum=3"])
    ds = ds_config_for(cfg, world=2)
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["train_batch_size"]) == (4, 3, 24)
    assert "optimizer" not in ds and ds["zero_optimization"]["stage"] == 2
    assert load_run_config(FIGURE_ONLY)["levels"] == ["figure"]
    with pytest.raises(ValueError):
        load_run_config(TINY, ["levels=[figure, pixel]"])


# (d) srun -> torch.distributed variables
class _Evil:
    """Unpickling this creates ``marker``: stands in for a checkpoint that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_resume_runs_no_code_from_a_copied_in_checkpoint(tmp_path):
    from panel2patch.train.main import PlainEngine, lr_lambda, rng_state, set_rng_state, weights_only_loading

    def engine():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        return PlainEngine(model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(1, 10)), 1, 1.0, 1)

    a = engine()
    a.backward(a.module(torch.ones(4, 3)).sum())
    a.step()
    a.save_checkpoint(tmp_path / "ckpt", "step00000001", {"step": 1, "epoch": 0, "consumed": 1})
    torch.save(rng_state(), tmp_path / "ckpt" / "step00000001" / "rng_rank0.pt")
    b = engine()
    with weights_only_loading():  # what main() resumes under: our own files load as before
        _, client = b.load_checkpoint(tmp_path / "ckpt")
        set_rng_state(torch.load(tmp_path / "ckpt" / "step00000001" / "rng_rank0.pt", weights_only=True))
    assert client == {"step": 1, "epoch": 0, "consumed": 1} and b.micro_steps == 1
    assert all(torch.equal(x, y) for x, y in zip(a.module.state_dict().values(), b.module.state_dict().values()))
    assert b.optimizer.state_dict()["state"][0]["step"] == 1
    # a checkpoint folder copied in from elsewhere: its pickles must not run, even when a loader
    # inside (DeepSpeed's checkpoint engine) asks for weights_only=False
    marker = tmp_path / "pwned"
    torch.save({"module": {}, "client_state": _Evil(marker)}, tmp_path / "ckpt" / "step00000001" / "plain_state.pt")
    torch.save({"torch": _Evil(marker)}, tmp_path / "evil_rng.pt")
    with weights_only_loading():
        with pytest.raises(pickle.UnpicklingError):
            engine().load_checkpoint(tmp_path / "ckpt")
        with pytest.raises(pickle.UnpicklingError):
            torch.load(tmp_path / "evil_rng.pt", weights_only=False)
    assert not marker.exists() and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_more_local_ranks_than_gpus_is_a_clear_error(monkeypatch):
    from panel2patch.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match="local rank 1 has no GPU of its own: this node has 1 visible"):
        distributed.device_for(1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.device_for(3) == torch.device("cpu")


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


def test_deepspeed_ops_build_in_the_environments_own_cache(monkeypatch):
    """DeepSpeed's compiled CPU ops go to a cache inside this (writable) environment, so two
    checkouts with their own venvs do not rebuild them in turn; a user's TORCH_EXTENSIONS_DIR wins."""
    from panel2patch.train.distributed import own_extensions_dir

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    own_extensions_dir()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == os.path.join(sys.prefix, "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "/somewhere/else")
    own_extensions_dir()
    assert os.environ["TORCH_EXTENSIONS_DIR"] == "/somewhere/else"


def test_launch_command_picks_srun_in_a_slurm_job_else_torchrun_or_one_process(tmp_path):
    from panel2patch.train.launch import job_key, launch_command, prepare_output

    args = ["--config", "c.yaml"]
    srun = launch_command("auto", args, tasks=4, nodes=2, cpus_per_task=8, gpus_per_task=1, python="py",
                          env={"SLURM_JOB_ID": "7"})
    assert srun == ["srun", "--ntasks=4", "--nodes=2", "--cpus-per-task=8", "--kill-on-bad-exit=1", "--label",
                    "--gpus-per-task=1", "py", "-m", "panel2patch.train.main", *args]
    assert launch_command("auto", args, tasks=2, python="py", env={})[:5] == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert launch_command("auto", args, tasks=1, python="py", env={}) == ["py", "-m", "panel2patch.train.main", *args]
    with pytest.raises(ValueError):
        launch_command("torchrun", args, tasks=4, nodes=2, env={})  # several nodes need Slurm
    with pytest.raises(ValueError):
        launch_command("single", args, tasks=2, env={})

    out = tmp_path / "run"
    key = {"sizes_json_sha256": "a", "world_size": 2}
    assert prepare_output(out, key) is False  # fresh
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "latest").write_text("step00000002")
    assert prepare_output(out, key) is True  # same inputs: resume
    assert prepare_output(out, {**key, "sizes_json_sha256": "b"}) is False  # new corpus: start afresh
    assert not (out / "checkpoints").exists()
    # the key follows the corpus: a rewritten shard (same sizes.json) changes it
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "sizes.json").write_text('{"train-000000.tar": 3}')
    (corpus / "train-000000.tar").write_bytes(b"x")
    k1 = job_key(corpus / "sizes.json", TINY, ["epochs=1"], 2)
    assert k1 == job_key(corpus / "sizes.json", TINY, ["epochs=1"], 2) != job_key(corpus / "sizes.json", TINY, [], 2)
    os.utime(corpus / "train-000000.tar", ns=(1, 1))
    assert job_key(corpus / "sizes.json", TINY, ["epochs=1"], 2) != k1


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
    for key in ("train/loss", *TERMS, "train/samples_per_second", "val/figure/i2t_r1", "val/panel/t2i_r5",
                "val/patch/i2t_r10"):
        assert key in run.data.metrics, key
    assert all(k in r and math.isfinite(r[k]) for r in rows for k in TERMS), rows[0]  # every step, every term
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
    _assert_same_final_weights(tmp_path / "full", tmp_path / "resumed")
    la, lb = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert [r["train/loss"] for r in la] == [r["train/loss"] for r in lb]  # steps 1-2 logged before the kill


def _assert_same_final_weights(a_dir: Path, b_dir: Path) -> None:
    from safetensors.torch import load_file

    a = load_file(str(a_dir / "final" / "open_clip_model.safetensors"))
    b = load_file(str(b_dir / "final" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_two_ranks_kill_and_resume_gives_the_uninterrupted_weights(shards, tmp_path):
    """(b2) torchrun, 2 processes, ZeRO-2 + bf16: both ranks SIGKILL themselves right after the
    step-2 checkpoint (torchrun then fails), a rerun resumes each rank's optimizer partition, data
    position and RNG, and ends with the weights of an uninterrupted 2-process run, bit for bit."""
    common = ["--config", str(TINY), "--data", str(shards), "--set", "max_steps=4", "--set", "checkpoint_every=2",
              "--set", "mlflow.enabled=false", "--set", "eval_every_epoch=false", "--set", "micro_batch=8"]
    full = _train([*common, "--output-dir", str(tmp_path / "full")], tmp_path, nproc=2)
    assert full.returncode == 0, full.stderr[-5000:]
    killed = _train([*common, "--output-dir", str(tmp_path / "resumed")], tmp_path, nproc=2, P2P_TEST_KILL_AT_STEP="2")
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    ckpt = tmp_path / "resumed" / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == "step00000002"
    assert sorted(p.name for p in (ckpt / "step00000002").glob("rng_rank*.pt")) == ["rng_rank0.pt", "rng_rank1.pt"]
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = _train([*common, "--output-dir", str(tmp_path / "resumed")], tmp_path, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-5000:]
    assert "resumed from" in resumed.stderr and json.loads((tmp_path / "resumed" / "result.json").read_text())["step"] == 4
    _assert_same_final_weights(tmp_path / "full", tmp_path / "resumed")
    la, lb = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert [r["train/loss"] for r in la] == [r["train/loss"] for r in lb]


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


@pytest.mark.slow
def test_export_is_an_open_clip_folder_with_a_full_model_card(shards, tmp_path):
    """Plain torch, one process, 2 steps on figure + panel, with a test split and MLflow: the
    final folder loads with open_clip as it is (same embeddings as ours) and its card names the
    commit, the MLflow run, the weights' sha256, the licences of the training pairs and test
    recall per level (patch: none, and why)."""
    import shutil

    import open_clip

    from panel2patch.model.clip import build_model
    from panel2patch.tracking import sha256_path

    data = tmp_path / "data"
    shutil.copytree(shards, data)
    sizes = json.loads((data / "sizes.json").read_text())
    shutil.copy(data / "val-000000.tar", data / "test-000000.tar")  # a test split for the card
    (data / "sizes.json").write_text(json.dumps({**sizes, "test-000000.tar": sizes["val-000000.tar"]}))
    out = tmp_path / "run"
    res = _train(["--config", str(TINY), "--data", str(data), "--output-dir", str(out), "--no-deepspeed",
                  "--set", "max_steps=2", "--set", "micro_batch=8", "--set", "levels=[figure, panel]",
                  "--set", f"mlflow.results_dir={tmp_path}"], tmp_path)
    assert res.returncode == 0, res.stderr[-5000:]
    final = out / "final"
    card = (final / "README.md").read_text()
    result = json.loads((out / "result.json").read_text())
    from mlflow.tracking import MlflowClient

    [run] = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()])
    assert f"MLflow run id: `{run.info.run_id}`" in card and "test/panel/i2t_r1" in run.data.metrics
    sha = sha256_path(final / "open_clip_model.safetensors")
    assert result["weights_sha256"] == sha and sha in card
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert f"git commit: `{commit}" in card
    assert "| CC BY 4.0 (eLife sample, synthetic crops) |" in card and "library_name: open_clip" in card
    test = card.split("## Test")[1]
    assert f"| panel | {int(result['test']['test/panel/n'])} | i2t_r1 " in test
    assert "| patch | 0 | none: not trained in this run (levels: figure, panel) |" in test
    assert "max_steps: 2" in card  # the run config

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{final}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{final}")
    ours = build_model(None, init=f"path:{final}").eval()
    ids, x = tokenizer(["red nuclei in sample 3."]), torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval().encode_text(ids, normalize=True), ours.encode_text(ids), atol=1e-6, rtol=0)
        assert torch.allclose(model.encode_image(x, normalize=True), ours.encode_image(x), atol=1e-6, rtol=0)

    # MLflow: the shards (sha256 per shard) as the run's dataset input, behind it a table; the model
    # logged with a signature and registered (tracking.registered_model_name, "{run}" = the run's name)
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")  # runs:/ URIs resolve in the current store
    [ds] = run.inputs.dataset_inputs
    assert ds.dataset.name == "corpus-shards" and {t.key: t.value for t in ds.tags}["mlflow.data.context"] == "training"
    table = pd.read_csv(mlflow.data.get_source(ds).load()).set_index("shard")
    assert set(table.index) == set(json.loads((data / "sizes.json").read_text()))
    assert table.loc["train-000000.tar", "sha256"] == sha256_path(data / "train-000000.tar")
    assert result["mlflow_model"]["registered"] == "models:/panel2patch-run/1" == run.data.tags["model.registered"]
    pyfunc = mlflow.pyfunc.load_model("models:/panel2patch-run/1")
    assert pyfunc.metadata.get_model_info().run_id == run.info.run_id
    text = "red nuclei in sample 3."
    with torch.no_grad():
        want = ours.encode_text(ours.tokenizer()([text])).numpy()
    assert np.allclose(pyfunc.predict(pd.DataFrame({"text": [text]})), want, atol=1e-6, rtol=0)
