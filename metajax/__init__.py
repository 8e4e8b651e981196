"""metajax: functional few-shot meta-learning in JAX."""
from metajax._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "metajax.training",
    "Conv4": "metajax.models",
    "FunctionalModel": "metajax.models",
    "MLP": "metajax.models",
    "MetaLearner": "metajax.algorithms",
    "TaskSource": "metajax.training",
    "adapt": "metajax.core",
    "anil": "metajax.algorithms",
    "as_model": "metajax.models",
    "boil": "metajax.algorithms",
    "build_model": "metajax.models",
    "classification": "metajax.algorithms",
    "combine": "metajax.core",
    "configure_host_allocator": "metajax.training",
    "evaluate_run": "metajax.training",
    "fomaml": "metajax.algorithms",
    "freeze_mask": "metajax.core",
    "gradient_based_learner": "metajax.algorithms",
    "head_only_mask": "metajax.core",
    "init_params": "metajax.models",
    "inner_loop": "metajax.core",
    "make_algorithm": "metajax.algorithms",
    "maml": "metajax.algorithms",
    "meta_loss": "metajax.core",
    "partition": "metajax.core",
    "multiclass": "metajax.algorithms",
    "multitask": "metajax.algorithms",
    "pretrain": "metajax.algorithms",
    "protomaml": "metajax.algorithms",
    "protonets": "metajax.algorithms",
    "regression": "metajax.algorithms",
    "supports": "metajax.algorithms",
    "task_keys": "metajax.algorithms",
    "task_metrics": "metajax.algorithms",
    "train_and_evaluate": "metajax.training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
