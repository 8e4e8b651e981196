"""Meta-learning algorithms as values (``MetaLearner``) built by factory functions."""
from metajax.algorithms.base import MetaLearner, supports, task_keys, trains_on
from metajax.algorithms.boil import boil
from metajax.algorithms.maml import (anil, fomaml, gradient_based_learner, maml, multitask,
                                     pretrain)
from metajax.algorithms.mamlpp import mamlpp, msl_weights
from metajax.algorithms.metasgd import metasgd
from metajax.algorithms.multiclass import multiclass
from metajax.algorithms.nil import nil, nil_scores
from metajax.algorithms.objectives import Objective, classification, regression, task_metrics
from metajax.algorithms.protomaml import protomaml
from metajax.algorithms.protonets import prototype_logits, prototypes, protonets
from metajax.algorithms.registry import ALGORITHMS, get_factory, make_algorithm
from metajax.algorithms.reptile import reptile

__all__ = ["ALGORITHMS", "MetaLearner", "Objective", "anil", "boil", "classification", "fomaml",
           "get_factory", "gradient_based_learner", "make_algorithm", "maml", "mamlpp",
           "metasgd", "msl_weights", "multiclass", "multitask", "nil", "nil_scores", "pretrain",
           "protomaml", "prototype_logits", "prototypes", "protonets", "regression", "reptile",
           "supports", "task_keys", "task_metrics", "trains_on"]
