"""Reptile on Omniglot 5-way 1-shot: 5 inner SGD steps, each on the next minibatch of one example
per class (support + query examples, cycled), Adam on the Reptile direction mean(theta - W_i)."""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(
        algo="reptile", inner_steps=5, options=dict(inner_batch=5), inner_lr=0.1, meta_batch=16,
        outer_optimizer="adam", meta_lr=1e-3)
