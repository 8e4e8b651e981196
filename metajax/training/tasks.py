"""From a config (or the user's own objects) to what training needs: a task sampler, the data of
each split, the objective and the model."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metajax.algorithms.objectives import Objective, classification, regression
from metajax.data.batches import check_class_batch, sample_class_batch
from metajax.data.episodes import check_episode_spec, sample_episode
from metajax.data.errors import DataError
from metajax.data.host_stream import choose_placement, split_nbytes
from metajax.data.ragged import RaggedImages, sample_ragged_episode
from metajax.data.sinusoid import sample_sinusoid_task
from metajax.data.sources import IMAGE_DATASETS, load_splits
from metajax.models.conv import resolve_conv_impl
from metajax.models.registry import build_model

DATASETS = ("sinusoid", *IMAGE_DATASETS, "folder")
SPLITS = ("train", "val", "test")


class TaskSource(NamedTuple):
    """``sample(key, split_data) -> (support, query)`` for one task, and the data of each split.

    ``placement`` says where ``splits`` live: ``"device"`` (sampled inside the jitted step) or
    ``"host"`` (``RaggedImages`` in host memory; each step's tasks are drawn on the host from the
    same keys, with the same indices, and prefetched: ``metajax.data.host_stream``).
    ``train_sample`` draws the training steps' tasks when they differ from the evaluation
    episodes (multiclass training's class-labelled batches); ``None``: ``sample``.
    """

    sample: Callable[[Any, Any], Any]
    splits: dict
    objective: Objective
    model: Any
    sample_input: Any
    placement: str = "device"
    train_sample: Callable[[Any, Any], Any] | None = None

    @property
    def sample_train(self) -> Callable[[Any, Any], Any]:
        """What a training step draws its tasks with."""
        return self.train_sample if self.train_sample is not None else self.sample


def make_task_source(cfg, *, model=None, data=None, class_batches: bool = False) -> TaskSource:
    """Builds the task source of ``cfg``; ``model``/``data`` replace the config's own.

    Args:
      cfg: the run's ``Config`` (ways, shots, query, dataset, model, data placement).
      model: a Flax module (or ``metajax.as_model``) to train instead of ``cfg.model``.
      data: a ``TaskSource``, or ``{"train", "val", "test"}`` splits, each a dense
        ``(classes, examples, H, W, C)`` array or a ``metajax.data.RaggedImages``; replaces
        ``cfg.dataset``.
      class_batches: training draws ``cfg.batch_size`` class-labelled images of the whole
        training split per step (multiclass pretraining), and the built-in model gets one output
        per training class; evaluation still draws N-way episodes.
    """
    if isinstance(data, TaskSource):
        if class_batches and data.train_sample is None:
            raise ValueError(f"--algo {cfg.algo} trains on class-labelled batches: give your "
                             "TaskSource a train_sample (e.g. metajax.data.sample_class_batch), "
                             "or pass the splits themselves as data={'train', 'val', 'test'}")
        return data if model is None else data._replace(model=model)
    if data is not None:
        return _image_source(cfg, _check_splits(data), model, class_batches)
    if class_batches and cfg.dataset == "sinusoid":
        raise ValueError(f"--algo {cfg.algo} trains a classifier over the training classes; "
                         "choose an image --dataset (sinusoid tasks have no classes)")
    if cfg.dataset == "sinusoid":
        sample = functools.partial(_sample_sinusoid, shots=cfg.shots, queries=cfg.query)
        model = model if model is not None else build_model(
            cfg.model or "mlp", 1, hidden=cfg.hidden, head_input=cfg.head_input, bn=cfg.bn)
        return TaskSource(sample, {"train": None, "val": None, "test": None}, regression(), model,
                          jnp.zeros((cfg.shots, 1)))
    if cfg.dataset == "folder":
        from metajax.data.folder import load_folder

        if cfg.data_dir is None:
            raise DataError("--dataset folder needs --data-dir ROOT, a folder with train/, val/ "
                            "and test/, each holding one sub-folder of images per class")
        return _image_source(cfg, load_folder(cfg.data_dir, image_size=cfg.image_size,
                                              progress=True), model, class_batches)
    if cfg.dataset in IMAGE_DATASETS:
        splits = load_splits(cfg.dataset, cfg.data_dir, source=cfg.source, progress=True)
        return _image_source(cfg, splits._asdict(), model, class_batches)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose one of: {', '.join(DATASETS)}, "
                     "or pass your own splits to train_and_evaluate(data=...)")


def _check_splits(data) -> dict:
    if not isinstance(data, Mapping) or set(data) != set(SPLITS):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"data must be a TaskSource or a mapping with the splits "
                         f"{', '.join(SPLITS)}; got {got}")
    return dict(data)


def _image_source(cfg, splits: dict, model, class_batches: bool = False) -> TaskSource:
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
    train_sample, outputs = None, cfg.ways
    if class_batches:
        if ragged:
            raise DataError(f"--algo {cfg.algo} draws class-labelled batches from a dense "
                            "training split on the device; this run's data is ragged or on the "
                            "host: use --data-on device with a dataset whose classes hold equally "
                            "many images")
        train_sample = functools.partial(sample_class_batch, batch_size=cfg.batch_size)
        outputs = num_classes("train")
        check_class_batch(*np.shape(splits["train"])[:2], cfg.batch_size)
    if placement == "device":
        splits = {k: jax.device_put(v) for k, v in splits.items()}
    if model is None:
        default = IMAGE_DATASETS[cfg.dataset].model if cfg.dataset in IMAGE_DATASETS else "conv4"
        model = build_model(cfg.model or default, outputs, hidden=cfg.hidden,
                            head_input=cfg.head_input, bn=cfg.bn,
                            conv_impl=resolve_conv_impl(cfg.conv_impl, cfg.algo,
                                                        task_chunk=cfg.task_chunk))
    return TaskSource(sample, splits, classification(), model,
                      jnp.zeros((cfg.ways * cfg.shots, *image_shape), jnp.float32), placement,
                      train_sample)



def _sample_sinusoid(key, data, *, shots, queries):
    del data  # sinusoid tasks are generated, not drawn from a split
    return sample_sinusoid_task(key, shots=shots, queries=queries)
