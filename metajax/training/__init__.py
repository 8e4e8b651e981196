"""Training: config, train state, jitted steps, checkpoints and the train/eval loops."""
from metajax._lazy import lazy_exports


_EXPORTS = {
    "Config": "metajax.training.config",
    "DATASETS": "metajax.training.tasks",
    "MetricsLog": "metajax.training.metrics_log",
    "NonFiniteLossError": "metajax.training.loop",
    "TaskSource": "metajax.training.tasks",
    "TrainState": "metajax.training.state",
    "batch_task_grads": "metajax.training.steps",
    "configure_host_allocator": "metajax.training.host_memory",
    "create_train_state": "metajax.training.state",
    "default_task_chunk": "metajax.training.steps",
    "evaluate_run": "metajax.training.loop",
    "list_checkpoints": "metajax.training.checkpoint",
    "make_eval_step": "metajax.training.steps",
    "make_meta_step": "metajax.training.steps",
    "make_task_source": "metajax.training.tasks",
    "map_tasks": "metajax.training.steps",
    "read_metrics": "metajax.training.metrics_log",
    "restore_checkpoint": "metajax.training.checkpoint",
    "sample_tasks": "metajax.training.steps",
    "save_checkpoint": "metajax.training.checkpoint",
    "train_and_evaluate": "metajax.training.loop",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
