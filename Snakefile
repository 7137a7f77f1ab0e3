# panel2patch: PubMed Central articles -> figure, panel and patch level image-text pairs.
#
#   snakemake --cores all                      # local run on config/config.yaml
#   snakemake --cores all --profile slurm      # one Slurm job per rule job (slurm/config.v8+.yaml)
#   snakemake --cores all ablation             # on demand: the ablation table (config ablation:)
#
# Every invocation is one MLflow parent run; every job a nested run (src/panel2patch/tracking.py).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/text.smk"
include: "workflow/rules/layout.smk"
include: "workflow/rules/detector.smk"
include: "workflow/rules/marker_detector.smk"
include: "workflow/rules/align.smk"
include: "workflow/rules/markers.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/audit.smk"


rule all:
    input:
        get_final_output(),
    default_target: True


onstart:
    start_tracking()


onsuccess:
    end_tracking("FINISHED")
    print_yield()


onerror:
    end_tracking("FAILED")
