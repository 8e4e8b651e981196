"""From a config to what training needs: a task sampler, the data splits, objective and model."""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp

from metajax.algorithms.objectives import Objective, classification, regression
from metajax.data.episodes import check_episode_spec, sample_episode
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.data.sources import IMAGE_DATASETS, load_splits
from metajax.models.registry import build_model

DATASETS = ("sinusoid", *IMAGE_DATASETS)


class TaskSource(NamedTuple):
    """``sample(key, split_data) -> (support, query)`` for one task, and the data of each split."""

    sample: Callable[[Any, Any], Any]
    splits: dict
    objective: Objective
    model: Any
    sample_input: Any


def make_task_source(cfg) -> TaskSource:
    """Loads the dataset of ``cfg`` (onto the default device) and builds its task sampler."""
    if cfg.dataset == "sinusoid":
        sample = functools.partial(_sample_sinusoid, shots=cfg.shots, queries=cfg.query)
        model = build_model(cfg.model or "mlp", 1, hidden=cfg.hidden)
        return TaskSource(sample, {"train": None, "val": None, "test": None}, regression(), model,
                          jnp.zeros((cfg.shots, 1)))
    if cfg.dataset in IMAGE_DATASETS:
        splits = load_splits(cfg.dataset, cfg.data_dir, source=cfg.source, progress=True)
        for name, images in splits._asdict().items():
            check_episode_spec(images.shape[0], images.shape[1], ways=cfg.ways, shots=cfg.shots,
                               queries=cfg.query, split=name)
        sample = functools.partial(sample_episode, ways=cfg.ways, shots=cfg.shots,
                                   queries=cfg.query)
        model = build_model(cfg.model or IMAGE_DATASETS[cfg.dataset].model, cfg.ways,
                            hidden=cfg.hidden, conv_impl=cfg.conv_impl)
        device_splits = {k: jnp.asarray(v) for k, v in splits._asdict().items()}
        shape = splits.train.shape[2:]
        return TaskSource(sample, device_splits, classification(), model,
                          jnp.zeros((cfg.ways * cfg.shots, *shape), jnp.float32))
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}")


def _sample_sinusoid(key, data, *, shots, queries):
    del data  # sinusoid tasks are generated, not drawn from a split
    return sample_sinusoid_task(key, shots=shots, queries=queries)
