"""Meta-learning algorithms as values (``MetaLearner``) built by factory functions."""
from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import anil, fomaml, maml, pretrain
from metajax.algorithms.objectives import Objective, classification, regression
from metajax.algorithms.registry import ALGORITHMS, make_algorithm

__all__ = ["ALGORITHMS", "MetaLearner", "Objective", "anil", "classification", "fomaml",
           "make_algorithm", "maml", "pretrain", "regression"]
