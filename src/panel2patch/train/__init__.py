"""Pretraining pieces: losses (:mod:`.losses`) and caption perturbations (:mod:`.perturb`).
The trainer (DeepSpeed, Slurm launch, checkpoints) builds on these."""
