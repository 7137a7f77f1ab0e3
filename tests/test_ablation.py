"""The ablation table (panel2patch.evaluate.ablation, ``panel2patch ablation``, ``snakemake ablation``):
the paired bootstrap on constructed per-item outcomes, the tables, the CLI, and the workflow target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from panel2patch.evaluate.ablation import bootstrap_diff, compare, markdown, statistic, to_html

from conftest import REPO


# ------------------------------------------------------------------------------ bootstrap
def _pair(n=400, p=0.5, flip=0.25, seed=1):
    """Baseline hits, and an arm that gets right every item the baseline got right plus a
    share ``flip`` of the items the baseline got wrong: the same items, a known difference."""
    rng = np.random.default_rng(seed)
    base = (rng.random(n) < p).astype(float)
    arm = base.copy()
    wrong = np.flatnonzero(base == 0)
    arm[rng.choice(wrong, int(flip * len(wrong)), replace=False)] = 1.0
    return arm, base


def test_a_known_difference_lies_in_its_interval_and_the_interval_excludes_zero():
    arm, base = _pair()
    true = arm.mean() - base.mean()
    assert 0.1 < true < 0.15
    r = bootstrap_diff(arm, base, resamples=2000, seed=0)
    assert r["diff"] == pytest.approx(true) and r["value"] == pytest.approx(arm.mean())
    assert r["baseline_value"] == pytest.approx(base.mean()) and r["n_items"] == 400
    assert r["ci_low"] < true < r["ci_high"] and r["ci_low"] > 0 and r["excludes_zero"]
    # the arm as baseline: the same difference, negated, still excluding 0
    back = bootstrap_diff(base, arm, resamples=2000, seed=0)
    assert back["diff"] == pytest.approx(-true) and back["ci_high"] < 0 and back["excludes_zero"]


def test_identical_arms_differ_by_zero_with_an_interval_that_holds_zero():
    _, base = _pair()
    r = bootstrap_diff(base, base.copy(), resamples=500)
    assert r["diff"] == 0 and r["ci_low"] <= 0 <= r["ci_high"] and not r["excludes_zero"]
    # two arms with the same accuracy but different hits (a shuffle): diff 0, interval around 0
    other = np.random.default_rng(3).permutation(base)
    r = bootstrap_diff(other, base, resamples=1000)
    assert r["diff"] == 0 and r["ci_low"] < 0 < r["ci_high"] and not r["excludes_zero"]


def test_paired_interval_is_narrower_than_unpaired_on_correlated_items():
    arm, base = _pair(flip=0.1)
    paired = bootstrap_diff(arm, base, resamples=2000, paired=True)
    unpaired = bootstrap_diff(arm, base, resamples=2000, paired=False)
    assert paired["diff"] == unpaired["diff"]
    width = lambda r: r["ci_high"] - r["ci_low"]  # noqa: E731
    assert width(paired) < 0.6 * width(unpaired)
    assert paired["excludes_zero"] and not unpaired["excludes_zero"]  # only pairing sees this small gain


def test_level_and_resamples_shape_the_interval_and_the_seed_fixes_it():
    arm, base = _pair()
    r95, r50 = bootstrap_diff(arm, base, ci=0.95), bootstrap_diff(arm, base, ci=0.5)
    assert r95["ci_low"] < r50["ci_low"] < r50["ci_high"] < r95["ci_high"]
    assert bootstrap_diff(arm, base, seed=4) == bootstrap_diff(arm, base, seed=4)
    with pytest.raises(ValueError, match="different items"):
        bootstrap_diff(arm, base[:-1])



def test_resamples_drawn_in_chunks_give_the_same_interval(monkeypatch):
    import panel2patch.evaluate.ablation as A

    arm, base = _pair(n=300)
    whole = bootstrap_diff(arm, base, resamples=400)
    monkeypatch.setattr(A, "CHUNK_CELLS", 300 * 7)  # 7 resamples per chunk, the last one shorter
    chunked = bootstrap_diff(arm, base, resamples=400)
    assert chunked["diff"] == whole["diff"] and chunked["excludes_zero"] == whole["excludes_zero"]
    assert chunked["ci_low"] == pytest.approx(whole["ci_low"], abs=0.02)
    assert chunked["ci_high"] == pytest.approx(whole["ci_high"], abs=0.02)


def test_balanced_accuracy_statistic_matches_sklearn_and_is_bootstrapped_per_class():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    y[:5] = 2  # unbalanced
    pred = np.where(rng.random(90) < 0.7, y, (y + 1) % 3)
    correct = (pred == y).astype(float)
    assert statistic(correct, y) == pytest.approx(balanced_accuracy_score(y, pred))
    assert statistic(correct, y) != pytest.approx(correct.mean())
    better = np.where(y == 0, 1.0, correct)  # the arm gets all of class 0 right
    r = bootstrap_diff(better, correct, y, resamples=500)
    assert r["diff"] == pytest.approx(balanced_accuracy_score(y, np.where(y == 0, y, pred)) - balanced_accuracy_score(y, pred))
    assert r["ci_low"] < r["diff"] < r["ci_high"]


# ------------------------------------------------------------------------------ compare + tables
def _evaluation(items_by_metric: dict, digest="d" * 64, data_sha="a" * 64, classes=None) -> dict:
    rows = []
    for (bench, data, metric), items in items_by_metric.items():
        row = {"benchmark": bench, "data": data, "metric": metric, "n": len(items),
               "values": {"model": float(np.mean(items)), "untrained": 0.1, "chance": 0.1}}
        if items is not None:
            row["items"] = {"model": list(map(float, items)), "untrained": [0.0] * len(items)}
            if classes is not None and metric == "balanced acc":
                row["item_classes"] = list(classes)
        rows.append(row)
    return {"models": [{"label": "model", "spec": "x", "digest": digest, "init": "random"}], "rows": rows,
            "data": {"corpus-test": {"sha256": data_sha, "source": "s", "n": 10}}}


R1 = ("retrieval", "corpus-test/panel", "i2t R@1")
PERT = ("perturbed", "corpus-test/panel", "pick original of 4")


def test_compare_pairs_arms_on_every_shared_metric_and_averages_seeds(tmp_path):
    arm, base = _pair(n=200)
    evs = {"multi": [_evaluation({R1: base, PERT: base})],
           "figure_only": [_evaluation({R1: arm, PERT: base}, digest="e" * 64),
                           _evaluation({R1: base, PERT: base}, digest="f" * 64)]}
    res = compare(evs, "multi", tmp_path, resamples=300, config={"seeds": [0, 1]})
    assert res["baseline"] == "multi" and set(res["arms"]) == {"multi", "figure_only"}
    assert res["arms"]["figure_only"]["seeds"] == 2 and res["arms"]["figure_only"]["models"] == ["e" * 64, "f" * 64]
    by = {m["metric"]: m for m in res["metrics"]}
    assert set(by) == {"retrieval/corpus-test/panel/i2t R@1", "perturbed/corpus-test/panel/pick original of 4"}
    r1 = by["retrieval/corpus-test/panel/i2t R@1"]
    # two seeds: one with the gain, one without -> half the gain
    assert r1["arm"] == "figure_only" and r1["diff"] == pytest.approx((arm.mean() - base.mean()) / 2)
    assert r1["n_items"] == 200 and r1["excludes_zero"] and r1["ci_low"] > 0
    assert {"metric", "arm", "baseline_value", "value", "diff", "ci_low", "ci_high", "n_items"} <= set(r1)
    pert = by["perturbed/corpus-test/panel/pick original of 4"]
    assert pert["diff"] == 0 and not pert["excludes_zero"]
    assert res["config"]["seeds"] == [0, 1] and res["config"]["resamples"] == 300 and res["config"]["ci"] == 0.95
    on_disk = json.loads((tmp_path / "ablation.json").read_text())
    assert on_disk["metrics"] == json.loads(json.dumps(res["metrics"]))
    assert not res["warnings"]
    # a run that made no optimizer step is named in a warning, in the JSON and the tables
    res = compare(evs, "multi", tmp_path, resamples=50, steps={"multi": [3], "figure_only": [3, 0]},
                  runs={"multi": ["m0"], "figure_only": ["f0", "f1"]})
    assert res["arms"]["figure_only"]["steps"] == [3, 0] and len(res["warnings"]) == 1
    assert "run f1 made 0 optimizer steps" in res["warnings"][0]
    assert "**Warning**: arm figure_only: run f1 made 0" in (tmp_path / "ablation.md").read_text()
    assert "<b>Warning</b>: arm figure_only: run f1" in (tmp_path / "ablation.html").read_text()
    assert "<li><b>figure_only</b>: 2 seed(s), runs f0, f1, optimizer steps 3, 0</li>" in (tmp_path / "ablation.html").read_text()


def test_compare_refuses_different_data_and_skips_rows_without_items():
    arm, base = _pair(n=50)
    with pytest.raises(ValueError, match="not evaluated on the same items"):
        compare({"a": [_evaluation({R1: base})], "b": [_evaluation({R1: arm}, data_sha="b" * 64)]}, "a")
    with pytest.raises(ValueError, match="baseline arm"):
        compare({"a": [_evaluation({R1: base})], "b": [_evaluation({R1: arm})]}, "c")
    old = _evaluation({R1: base})
    del old["rows"][0]["items"]  # an evaluation.json from before per-item outcomes
    res = compare({"a": [_evaluation({R1: base, PERT: base})], "b": [_evaluation({PERT: arm}) | {"rows": old["rows"] + _evaluation({PERT: arm})["rows"]}]}, "a")
    assert [m["metric"] for m in res["metrics"]] == ["perturbed/corpus-test/panel/pick original of 4"]
    assert res["skipped"] == ["retrieval/corpus-test/panel/i2t R@1"]


def test_markdown_and_html_show_every_comparison_with_its_interval_and_chart(tmp_path):
    arm, base = _pair(n=200)
    evs = {"multi": [_evaluation({R1: base, PERT: base})], "figure_only": [_evaluation({R1: arm, PERT: base})],
           "no_<prd>": [_evaluation({R1: base, PERT: arm})]}
    res = compare(evs, "multi", tmp_path, resamples=200)
    md = (tmp_path / "ablation.md").read_text()
    assert md == markdown(res)
    assert "| metric | arm | n | multi | arm value | diff | 95% CI | excludes 0 |" in md
    r1 = next(m for m in res["metrics"] if m["arm"] == "figure_only" and m["measure"] == "i2t R@1")
    assert (f"| retrieval/corpus-test/panel/i2t R@1 | figure_only | 200 | {base.mean():.3f} | {arm.mean():.3f} | "
            f"{r1['diff']:+.3f} | [{r1['ci_low']:+.3f}, {r1['ci_high']:+.3f}] | * |") in md
    page = (tmp_path / "ablation.html").read_text()
    assert page == to_html(res) and page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert page.count('<rect class="bar"') == 4 and page.count('class="ci"') == 4  # 2 metrics x 2 arms
    assert "no_&lt;prd&gt;" in page and "no_<prd>" not in page
    assert page.count('<tr class="sig">') == sum(m["excludes_zero"] for m in res["metrics"]) == 2
    import xml.etree.ElementTree as ET

    svg = ET.fromstring(page[page.index("<svg"):page.index("</svg>") + 6])  # well-formed inline SVG
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]
    zero = float(next(svg.iter("{http://www.w3.org/2000/svg}line")).get("x1"))
    for b in bars:  # a gain is drawn right of the 0 line, a zero difference at it
        m = next(m for m in res["metrics"] if m["arm"] == b.get("data-arm") and m["metric"] == b.get("data-metric"))
        left, width = float(b.get("x")), float(b.get("width"))
        assert (left == pytest.approx(zero, abs=0.1) and width > 5) if m["diff"] > 0 else left <= zero <= left + width + 0.1


# ------------------------------------------------------------------------------ CLI
def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "panel2patch.cli", "ablation", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=env)


def test_cli_writes_the_three_files_and_refuses_bad_arms(tmp_path):
    arm, base = _pair(n=100)
    for name, ev in (("a0", _evaluation({R1: base})), ("b0", _evaluation({R1: arm})), ("b1", _evaluation({R1: arm})),
                     ("x", _evaluation({R1: arm}, data_sha="c" * 64))):
        (tmp_path / f"{name}.json").write_text(json.dumps(ev))
    res = _cli("--arm", "base=a0.json", "--arm", "gain=b0.json,b1.json", "--baseline", "base", "--out", "out",
               "--resamples", "200", "--mlflow", "--results-dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "| retrieval/corpus-test/panel/i2t R@1 | gain | 100 |" in res.stdout
    out = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert out["arms"]["gain"]["seeds"] == 2 and out["config"]["resamples"] == 200
    assert (tmp_path / "out" / "ablation.html").is_file() and (tmp_path / "mlflow" / "mlflow.db").is_file()
    for args, message in ((["--arm", "base=a0.json", "--arm", "gain=nope.json"], "nope.json: no such file"),
                          (["--arm", "base=a0.json", "--arm", "base=b0.json"], "given twice"),
                          (["--arm", "base=a0.json", "--arm", "gain=x.json"], "not evaluated on the same items")):
        bad = _cli(*args, "--baseline", "base", "--out", "o2", cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    bad = _cli("--arm", "base=a0.json", "--arm", "gain=b0.json", "--baseline", "other", "--out", "o2", cwd=tmp_path)
    assert bad.returncode == 2 and "baseline arm 'other'" in bad.stderr


# ------------------------------------------------------------------------------ the workflow target
def _job_counts(out: str) -> dict[str, int]:
    table = out[out.index("Job stats"):].split("\n\n")[0].splitlines()[3:]
    return {line.split()[0]: int(line.split()[1]) for line in table if line.split() and line.split()[0] != "total"}


@pytest.mark.slow
def test_dry_run_plans_a_train_and_an_evaluate_job_per_arm_and_seed(tmp_path):
    from test_workflow import copy_repo, snakemake

    work = copy_repo(tmp_path / "wf")
    proc = snakemake(work, "-n", "ablation", "--config", "ablation={seeds: [0, 7]}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = _job_counts(out)
    assert jobs["ablation_run_config"] == jobs["train"] == jobs["evaluate"] == 8 and jobs["ablation"] == 1, jobs
    for arm in ("multi_granular", "figure_only", "no_mgll", "no_prd"):
        for seed in (0, 7):
            assert f"results/train/ablation-{arm}-s{seed}/final" in out and f"results/evaluate/ablation-{arm}-s{seed}/evaluation.json" in out
    assert "results/ablation/runs/ablation-no_prd-s7.yaml" in out
    assert "ablation" not in _job_counts((lambda p: p.stdout + p.stderr)(snakemake(work, "-n")))  # not in the default target
    bad = snakemake(work, "-n", "ablation", "--config", "ablation={baseline: nothing}")
    assert bad.returncode != 0 and "ablation.baseline 'nothing' is not one of ablation.arms" in bad.stdout + bad.stderr


@pytest.fixture(scope="module")
def ablated(demo, tmp_path_factory):
    """`snakemake ablation` on a copy of the demo (its corpus reused): two arms, tiny training
    (2 optimizer steps), three benchmarks."""
    import shutil
    import time

    import yaml

    from test_workflow import snakemake

    work = tmp_path_factory.mktemp("abl") / "wf"
    shutil.copytree(demo, work, symlinks=True)
    cfg = yaml.safe_load((work / "config/config.yaml").read_text())
    cfg["ablation"].update(arms={"multi_granular": {"set": []}, "figure_only": {"set": ["levels=[figure]"]}},
                           set=["micro_batch=4", "max_steps=2", "checkpoint_every=0"], resamples=500)
    cfg["evaluate"]["benchmarks"] = ["retrieval", "zeroshot", "perturbed"]
    (work / "config/config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    t0 = time.perf_counter()
    proc = snakemake(work, "ablation", timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    ran = {line.split("(Rule: ")[1].rstrip(")") for line in proc.stderr.splitlines() if "(Rule: " in line}
    return {"work": work, "proc": proc, "ran": ran, "seconds": time.perf_counter() - t0}


@pytest.mark.slow
def test_ablation_target_trains_evaluates_and_compares_the_arms_on_the_same_items(ablated):
    work = ablated["work"]
    res = work / "results"
    # the corpus was reused: only the arms' jobs ran
    assert ablated["ran"] <= {"ablation_run_config", "train", "evaluate", "ablation"}, ablated["ran"]
    figure_cfg = (res / "ablation/runs/ablation-figure_only-s0.yaml").read_text()
    assert "levels:\n- figure\n" in figure_cfg and "seed: 0" in figure_cfg and "micro_batch: 4" in figure_cfg
    # train.set, then ablation.set (which wins), then the arm's own, then the seed
    assert figure_cfg.index("--set micro_batch=8") < figure_cfg.index("--set micro_batch=4") < \
        figure_cfg.index("--set levels=[figure]") < figure_cfg.index("--set seed=0")
    assert "- panel" in (res / "ablation/runs/ablation-multi_granular-s0.yaml").read_text()
    evs = {arm: json.loads((res / f"evaluate/ablation-{arm}-s0/evaluation.json").read_text())
           for arm in ("multi_granular", "figure_only")}
    assert evs["multi_granular"]["data"] == evs["figure_only"]["data"]  # the same test items
    assert evs["multi_granular"]["models"][0]["digest"] != evs["figure_only"]["models"][0]["digest"]
    import yaml

    trained = {arm: json.loads((res / f"train/ablation-{arm}-s0/result.json").read_text()) for arm in evs}
    assert trained["figure_only"]["manifest_digest"] == trained["multi_granular"]["manifest_digest"]  # same shards
    used = {arm: yaml.safe_load((res / f"train/ablation-{arm}-s0/run_config.yaml").read_text()) for arm in evs}
    assert used["figure_only"]["levels"] == ["figure"] and used["multi_granular"]["levels"] == ["figure", "panel", "patch"]
    assert used["figure_only"]["seed"] == used["multi_granular"]["seed"] == 0
    assert used["figure_only"]["max_steps"] == 2 and trained["figure_only"]["step"] == 2
    assert {k: v for k, v in used["figure_only"].items() if k not in ("levels", "mlflow", "output_dir")} == \
        {k: v for k, v in used["multi_granular"].items() if k not in ("levels", "mlflow", "output_dir")}  # the one change

    table = json.loads((res / "ablation/ablation.json").read_text())
    assert table["baseline"] == "multi_granular" and set(table["arms"]) == {"multi_granular", "figure_only"}
    assert table["arms"]["figure_only"]["runs"] == ["ablation-figure_only-s0"]
    assert table["arms"]["figure_only"]["steps"] == [2] and not table["warnings"]  # both arms trained
    assert table["config"]["resamples"] == 500 and table["config"]["ci"] == 0.95 and table["config"]["seeds"] == [0]
    rows = {f"{r['benchmark']}/{r['data']}/{r['metric']}": r for r in evs["multi_granular"]["rows"]}
    other = {f"{r['benchmark']}/{r['data']}/{r['metric']}": r for r in evs["figure_only"]["rows"]}
    assert {m["metric"] for m in table["metrics"]} == set(rows) and not table["skipped"]
    assert {m["metric"].split("/")[0] for m in table["metrics"]} == {"retrieval", "zeroshot", "perturbed"}
    for m in table["metrics"]:
        assert m["arm"] == "figure_only" and m["n_items"] == rows[m["metric"]]["n"]
        assert m["baseline_value"] == pytest.approx(rows[m["metric"]]["values"]["model"], abs=1e-5)
        assert m["value"] == pytest.approx(other[m["metric"]]["values"]["model"], abs=1e-5)
        assert m["diff"] == pytest.approx(m["value"] - m["baseline_value"])
        assert m["ci_low"] <= m["diff"] + 1e-9 and m["diff"] <= m["ci_high"] + 1e-9
    md = (res / "ablation/ablation.md").read_text()
    assert "| metric | arm | n | multi_granular | arm value | diff | 95% CI | excludes 0 |" in md
    assert md.count("| figure_only |") == len(table["metrics"])
    page = (res / "ablation/ablation.html").read_text()
    assert page.count('<rect class="bar"') == len(table["metrics"])
    for rule in ("ablation", "ablation_run_config"):
        assert any((res / "logs" / rule).iterdir()) and any((res / "benchmarks" / rule).iterdir())


@pytest.mark.slow
def test_ablation_run_logs_the_tables_to_mlflow_and_a_rerun_has_nothing_to_do(ablated):
    import mlflow
    from mlflow.tracking import MlflowClient

    from test_workflow import snakemake

    work = ablated["work"]
    uri = f"sqlite:///{work}/results/mlflow/mlflow.db"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["panel2patch"], output_format="list")
    [run] = [r for r in runs if r.info.run_name == "ablation:all"]
    assert run.info.status == "FINISHED" and run.data.tags.get("mlflow.parentRunId")
    names = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {"ablation.json", "ablation.md", "ablation.html"} <= names
    assert any(k.startswith("figure_only/retrieval/") and k.endswith("/diff") for k in run.data.metrics)
    assert {r.info.run_name for r in runs} >= {"train:ablation-figure_only-s0", "evaluate:ablation-multi_granular-s0"}
    proc = snakemake(work, "-n", "ablation")
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr
