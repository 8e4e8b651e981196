"""Proto-MAML on Omniglot 5-way 1-shot (Triantafillou et al. 2020) with MAML's Conv4 and
hyperparameters, second order (their experiments use the first-order variant)."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="protomaml", steps=3000)
