"""Joint-training baseline on sinusoids (MAML paper Fig. 2), to compare with sinusoid MAML."""
from metajax.configs import default


def get_config():
    return default.get_config().replace(algo="pretrain")
