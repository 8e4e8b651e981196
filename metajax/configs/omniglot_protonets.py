"""Prototypical Networks on Omniglot 5-way 1-shot (Snell et al. 2017), on MAML's Conv4.

Snell et al. train with more ways than tested (60-way) and 5 queries; this keeps the test-time
5-way episodes of the other Omniglot configs so that the algorithms are compared on one task
distribution (see README "Bring your own").
"""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(algo="protonets", inner_steps=0,
                                              eval_inner_steps=0, steps=3000)
