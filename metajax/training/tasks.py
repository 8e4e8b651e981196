"""From a config (or the user's own objects) to what training needs: a task sampler, the data of
each split, the objective and the model."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.objectives import Objective, classification, regression
from metajax.data.episodes import check_episode_spec, sample_episode
from metajax.data.errors import DataError
from metajax.data.host_stream import choose_placement, split_nbytes
from metajax.data.ragged import RaggedImages, sample_ragged_episode
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.data.sources import IMAGE_DATASETS, load_splits
from metajax.models.registry import build_model

DATASETS = ("sinusoid", *IMAGE_DATASETS, "folder")
SPLITS = ("train", "val", "test")


class TaskSource(NamedTuple):
    """``sample(key, split_data) -> (support, query)`` for one task, and the data of each split.

    ``placement`` says where ``splits`` live: ``"device"`` (sampled inside the jitted step) or
    ``"host"`` (``RaggedImages`` in host memory; each step's tasks are drawn on the host from the
    same keys, with the same indices, and prefetched: ``metajax.data.host_stream``).
    """

    sample: Callable[[Any, Any], Any]
    splits: dict
    objective: Objective
    model: Any
    sample_input: Any
    placement: str = "device"


def make_task_source(cfg, *, model=None, data=None) -> TaskSource:
    """Builds the task source of ``cfg``; ``model``/``data`` replace the config's own.

    Args:
      cfg: the run's ``Config`` (ways, shots, query, dataset, model, data placement).
      model: a Flax module (or ``metajax.as_model``) to train instead of ``cfg.model``.
      data: a ``TaskSource``, or ``{"train", "val", "test"}`` splits, each a dense
        ``(classes, examples, H, W, C)`` array or a ``metajax.data.RaggedImages``; replaces
        ``cfg.dataset``.
    """
    if isinstance(data, TaskSource):
        return data if model is None else data._replace(model=model)
    if data is not None:
        return _image_source(cfg, _check_splits(data), model)
    if cfg.dataset == "sinusoid":
        sample = functools.partial(_sample_sinusoid, shots=cfg.shots, queries=cfg.query)
        model = model if model is not None else build_model(cfg.model or "mlp", 1,
                                                            hidden=cfg.hidden)
        return TaskSource(sample, {"train": None, "val": None, "test": None}, regression(), model,
                          jnp.zeros((cfg.shots, 1)))
    if cfg.dataset == "folder":
        from metajax.data.folder import load_folder

        if cfg.data_dir is None:
            raise DataError("--dataset folder needs --data-dir ROOT, a folder with train/, val/ "
                            "and test/, each holding one sub-folder of images per class")
        return _image_source(cfg, load_folder(cfg.data_dir, image_size=cfg.image_size,
                                              progress=True), model)
    if cfg.dataset in IMAGE_DATASETS:
        splits = load_splits(cfg.dataset, cfg.data_dir, source=cfg.source, progress=True)
        return _image_source(cfg, splits._asdict(), model)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}, "
                     "or pass your own splits to train_and_evaluate(data=...)")


def _check_splits(data) -> dict:
    if not isinstance(data, Mapping) or set(data) != set(SPLITS):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"data must be a TaskSource or a mapping with the splits "
                         f"{', '.join(SPLITS)}; got {got}")
    return dict(data)


def _image_source(cfg, splits: dict, model) -> TaskSource:
    """A classification source over image splits, dense or ragged, on the device or the host."""
    # The split with the fewest classes first, so that a --ways error states the binding limit.
    def num_classes(name):
        split = splits[name]
        return split.num_classes if isinstance(split, RaggedImages) else int(np.shape(split)[0])
    for name in sorted(SPLITS, key=num_classes):
        split = splits[name]
        if isinstance(split, RaggedImages):
            split.check_episode_spec(ways=cfg.ways, shots=cfg.shots, queries=cfg.query,
                                     split=name)
        else:
            shape = np.shape(split)
            if len(shape) < 3:
                raise DataError(f"the {name} split must be (classes, examples, H, W, C) or a "
                                f"RaggedImages, got shape {shape}")
            check_episode_spec(shape[0], shape[1], ways=cfg.ways, shots=cfg.shots,
                               queries=cfg.query, split=name)
    placement = cfg.data_on
    if placement == "auto":
        placement = choose_placement(split_nbytes(splits), jax.devices()[0])
    ragged = placement == "host" or any(isinstance(s, RaggedImages) for s in splits.values())
    if ragged:
        splits = {k: v if isinstance(v, RaggedImages) else RaggedImages.from_dense(v)
                  for k, v in splits.items()}
        sample = functools.partial(sample_ragged_episode, ways=cfg.ways, shots=cfg.shots,
                                   queries=cfg.query)
        image_shape = splits["train"].image_shape
    else:
        sample = functools.partial(sample_episode, ways=cfg.ways, shots=cfg.shots,
                                   queries=cfg.query)
        image_shape = tuple(np.shape(splits["train"])[2:])
    if placement == "device":
        splits = {k: jax.device_put(v) for k, v in splits.items()}
    if model is None:
        default = IMAGE_DATASETS[cfg.dataset].model if cfg.dataset in IMAGE_DATASETS else "conv4"
        model = build_model(cfg.model or default, cfg.ways, hidden=cfg.hidden,
                            head_input=cfg.head_input,
                            conv_impl=cfg.conv_impl)
    return TaskSource(sample, splits, classification(), model,
                      jnp.zeros((cfg.ways * cfg.shots, *image_shape), jnp.float32), placement)


def _sample_sinusoid(key, data, *, shots, queries):
    del data  # sinusoid tasks are generated, not drawn from a split
    return sample_sinusoid_task(key, shots=shots, queries=queries)
