"""metajax: functional few-shot meta-learning in JAX."""
from metajax.algorithms import (MetaLearner, anil, classification, fomaml, make_algorithm, maml,
                                pretrain, regression)
from metajax.core import adapt, combine, freeze_mask, head_only_mask, inner_loop, meta_loss, partition
from metajax.models import MLP, Conv4, build_model, init_params
from metajax.training import Config, evaluate_run, train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "Config", "Conv4", "MLP", "MetaLearner", "adapt", "anil", "build_model", "classification",
    "combine", "evaluate_run", "fomaml", "freeze_mask", "head_only_mask", "init_params",
    "inner_loop", "make_algorithm", "maml", "meta_loss", "partition", "pretrain", "regression",
    "train_and_evaluate",
]
