"""Meta-SGD on Omniglot 5-way 1-shot: MAML's settings, per-parameter rates starting at 0.4."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="metasgd")
