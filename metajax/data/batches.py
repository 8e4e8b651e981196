"""Plain supervised minibatches over all classes of a split (multiclass pretraining).

Raghu et al. (2020, Table 5) compare MAML's body with one trained by "multiclass pretraining":
ordinary supervised learning over every training class at once. Its minibatches are images
labelled with their class's index in the split, drawn from the same ``(classes, examples, ...)``
arrays the episodes come from.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metajax.checks import check_key
from metajax.data.episodes import UINT8_SCALE, Episode, as_count
from metajax.data.errors import DataError

__all__ = ["check_class_batch", "sample_class_batch"]


def check_class_batch(num_classes: int, num_examples: int, batch_size: int) -> None:
    """DataError unless ``batch_size`` images can be drawn without replacement from a split of
    ``num_classes`` classes of ``num_examples`` images."""
    total = num_classes * num_examples
    if not 1 <= batch_size <= total:
        raise DataError(f"--batch-size {batch_size} must be between 1 and the {total} images of "
                        f"the training split ({num_classes} classes x {num_examples}); lower it")


def sample_class_batch(key: jax.Array, images: jax.Array, *, batch_size: int) -> Episode:
    """``batch_size`` images drawn without replacement from a whole split, labelled by class.

    Args:
      key: the batch's PRNG key.
      images: one split, ``(classes, examples, H, W, Ch)``, uint8 (0..255) or float (0..1).
      batch_size: images per batch, at most ``classes * examples``.

    Returns:
      An :class:`Episode` whose support and query are the same ``(x, y)`` batch: ``x`` float32
      in [0, 1], ``y`` int32 class indices in ``[0, classes)`` (the task interface every
      algorithm takes; multiclass training reads the support only).

    Raises:
      DataError: the split has the wrong rank or dtype, or holds fewer images than a batch.
    """
    check_key(key, "key", "sample_class_batch", optional=False)
    batch_size = as_count(batch_size, "--batch-size")
    if getattr(images, "ndim", 0) < 3:
        raise DataError(f"images must be (classes, examples, ...) grouped by class, got shape "
                        f"{tuple(getattr(images, 'shape', ()))}; pass e.g. load_omniglot().train")
    dtype = np.dtype(images.dtype)
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise DataError(f"images must be uint8 (0..255) or floating point (0..1), got {dtype}")
    num_classes, num_examples = int(images.shape[0]), int(images.shape[1])
    check_class_batch(num_classes, num_examples, batch_size)
    total = num_classes * num_examples
    flat = jax.random.choice(key, total, (batch_size,), replace=False)
    classes, examples = flat // num_examples, flat % num_examples
    x = jnp.asarray(images)[classes, examples].astype(jnp.float32)
    if dtype == np.uint8:
        x = x * UINT8_SCALE
    y = classes.astype(jnp.int32)
    return Episode((x, y), (x, y))
