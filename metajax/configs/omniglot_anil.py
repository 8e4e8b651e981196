"""ANIL on Omniglot 5-way 1-shot, MAML's hyperparameters (Raghu et al. 2020)."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="anil", steps=3000)
