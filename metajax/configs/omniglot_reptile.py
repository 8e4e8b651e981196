"""Reptile on Omniglot 5-way 1-shot: 5 inner SGD steps on support + query, outer SGD (beta = 1)."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(
        algo="reptile", inner_steps=5, inner_lr=0.1, outer_optimizer="sgd", meta_lr=1.0)
