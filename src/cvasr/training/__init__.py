"""Training: the espnet2 ASR task with the recipe's extensions (`python -m cvasr.training.task`) and
the stage 3-4 command lines that drive it."""
