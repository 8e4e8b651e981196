"""BOIL on Omniglot 5-way 1-shot (Oh et al. 2021): MAML's protocol, inner loop on the body only."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="boil", steps=3000)
