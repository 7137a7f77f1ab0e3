"""Pretraining: losses (:mod:`.losses`), caption perturbations (:mod:`.perturb`), WebDataset input
(:mod:`.data`), launcher-agnostic distributed start (:mod:`.distributed`), retrieval recall@K
(:mod:`.evaluate`), the DeepSpeed ZeRO trainer (:mod:`.main`, ``python -m panel2patch.train.main``) and
how a workflow job starts its ranks (:mod:`.launch`: srun in a Slurm job, else torchrun or one process)."""
