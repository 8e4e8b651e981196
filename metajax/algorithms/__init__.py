"""Meta-learning algorithms as values (``MetaLearner``) built by factory functions."""
from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import anil, fomaml, maml, pretrain
from metajax.algorithms.mamlpp import mamlpp, msl_weights
from metajax.algorithms.metasgd import metasgd
from metajax.algorithms.nil import nil, nil_scores
from metajax.algorithms.objectives import Objective, classification, regression
from metajax.algorithms.registry import ALGORITHMS, MASKABLE, make_algorithm
from metajax.algorithms.reptile import reptile

__all__ = ["ALGORITHMS", "MASKABLE", "MetaLearner", "Objective", "anil", "classification", "fomaml",
           "make_algorithm", "maml", "mamlpp", "metasgd", "msl_weights", "nil", "nil_scores", "pretrain", "regression",
           "reptile"]
