"""First-order MAML on Omniglot 5-way 1-shot."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="fomaml")
