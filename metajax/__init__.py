"""metajax: functional few-shot meta-learning in JAX."""
from metajax.algorithms import (MetaLearner, anil, boil, classification, fomaml,
                                gradient_based_learner, make_algorithm, maml, pretrain, protomaml,
                                protonets, regression, supports, task_keys, task_metrics)
from metajax.core import adapt, combine, freeze_mask, head_only_mask, inner_loop, meta_loss, partition
from metajax.models import MLP, Conv4, FunctionalModel, as_model, build_model, init_params
from metajax.training import Config, TaskSource, evaluate_run, train_and_evaluate

__version__ = "0.1.0"

__all__ = [
    "Config", "Conv4", "FunctionalModel", "MLP", "MetaLearner", "TaskSource", "adapt", "anil",
    "as_model", "boil", "build_model", "classification", "combine", "evaluate_run", "fomaml",
    "freeze_mask", "gradient_based_learner", "head_only_mask", "init_params", "inner_loop",
    "make_algorithm", "maml", "meta_loss", "partition", "pretrain", "protomaml", "protonets",
    "regression", "supports", "task_keys", "task_metrics", "train_and_evaluate",
]
