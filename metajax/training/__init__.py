"""Training: config, train state, jitted steps, checkpoints and the train/eval loops."""
from metajax.training.checkpoint import list_checkpoints, restore_checkpoint, save_checkpoint
from metajax.training.config import Config
from metajax.training.loop import NonFiniteLossError, evaluate_run, train_and_evaluate
from metajax.training.metrics_log import MetricsLog, read_metrics
from metajax.training.state import TrainState, create_train_state
from metajax.training.steps import (batch_task_grads, default_task_chunk, make_eval_step,
                                    make_meta_step, map_tasks, sample_tasks)
from metajax.training.tasks import DATASETS, TaskSource, make_task_source

__all__ = [
    "Config", "DATASETS", "MetricsLog", "NonFiniteLossError", "TaskSource", "TrainState",
    "batch_task_grads", "create_train_state", "default_task_chunk", "evaluate_run",
    "list_checkpoints", "make_eval_step", "make_meta_step", "make_task_source", "map_tasks",
    "read_metrics", "restore_checkpoint",
    "sample_tasks", "save_checkpoint", "train_and_evaluate",
]
