"""panel2patch: biomedical figures -> figure, panel and patch level image-text pairs.

One subpackage per pipeline stage (``ingest``, ``layout``, ``markers``, ``text``, ``align``,
``corpus``, ``model``, ``train``, ``evaluate``) plus ``tracking`` for MLflow lineage.
The Snakemake rules in ``workflow/`` and the ``panel2patch`` command line call the same functions.
"""

__version__ = "0.1.0"
