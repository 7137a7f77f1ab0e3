# Input functions and values shared by the rule files, kept in a file of their own (snakemake --lint).
import os

from panel2patch.smk import code_stamp

# The software of every job (with --software-deployment-method conda): Python, tesseract,
# and this checkout of the package, installed editable by envs/panel2patch.post-deploy.sh.
ENV = "../../envs/panel2patch.yaml"
os.environ.update(P2P_REPO=workflow.basedir)  # set for the post-deploy script (see the env file)

# MLflow settings of every job: where its store is (JOB_TRACKING, common.smk: a key only the
# workflow run reads, such as stale_after_hours, stays out so that changing it reruns nothing) and
# the folder whose mlflow/ holds the embedded store and the parent-run file (panel2patch.tracking)
TRACKING = {**JOB_TRACKING, "results": RESULTS}


def code(script, *modules):
    """The package files ``workflow/scripts/<script>`` (and ``modules``, run in other processes)
    runs, as one input: results/code/<script>.sha256, their sha256, rewritten only when one of them
    changes (panel2patch.smk.code_stamp), so a library edit reruns exactly the rules whose code it
    changes."""
    return code_stamp(f"{workflow.basedir}/workflow/scripts/{script}", f"{RESULTS}/code", *modules)


def layout_detector(wildcards):
    """The detector weights layout.method needs: none for splitter; layout.detector_weights, or
    else the output of train_detector (so the DAG trains it first)."""
    if config["layout"]["method"] == "splitter":
        return []
    return [config["layout"]["detector_weights"] or f"{RESULTS}/models/panel_detector.pt"]


def marker_weights(wildcards):
    """The learned marker detector's weights when markers.detect uses them (Snakemake then trains
    them first if they are the output of train_marker_detector)."""
    det = config["markers"].get("detect") or {}
    return [det["weights"]] if det.get("method", "heuristic") != "heuristic" and det.get("weights") else []


def detector_sources(wildcards):
    """Real source folders/files named in the config, so a change to them retrains the model."""
    src = config["detector"]["sources"]
    return [p for p in [src.get("vqa_rad"), src.get("exsclaim"), *(src.get("panel_gt") or [])] if p]


def marker_detector_sources(wildcards):
    """Real source folders named in the config, so a change to them retrains the model."""
    src = config["markers"]["detector"].get("sources", {})
    return [p for p in [src.get("vqa_rad"), src.get("exsclaim")] if p]


def marker_verifier_sources(wildcards):
    src = config["markers"].get("verifier", {}).get("sources", {})
    return [p for p in [src.get("vqa_rad"), src.get("hand_labelled")] if p]


def evaluation_data(wildcards):
    """The benchmark data the evaluate rule reads besides the corpus (VQA-RAD folder, user sets),
    so a change to them reruns the evaluation."""
    ev = config["evaluate"]
    return [p for p in [ev.get("vqa_rad"), *ev.get("datasets", []), *ev.get("pairs", [])] if p]
