"""Pretraining: losses (:mod:`.losses`), caption perturbations (:mod:`.perturb`), WebDataset input
(:mod:`.data`), launcher-agnostic distributed start (:mod:`.distributed`), retrieval recall@K
(:mod:`.evaluate`) and the DeepSpeed ZeRO trainer (:mod:`.main`, ``python -m panel2patch.train.main``)."""
