"""Joint-training baseline on sinusoids (MAML paper Fig. 2), to compare with sinusoid MAML.

Fine-tuning the jointly trained model with MAML's step size 0.01 diverges on some tasks (10 steps:
2 of 200 test tasks gave NaN); 0.003 is stable and the best of {0.01, 0.003} we measured.
"""
from metajax.configs import default


def get_config():
    return default.get_config().replace(algo="multitask", inner_lr=0.003)
