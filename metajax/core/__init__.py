"""Adaptation core: pure, single-task inner loops."""
from metajax.core.adapt import adapt, inner_loop, meta_loss
from metajax.core.partition import (batch_norm_mask, broadcast_mask, combine, freeze_mask,
                                    head_only_mask, mask_and, partition)

__all__ = ["adapt", "batch_norm_mask", "broadcast_mask", "combine", "freeze_mask",
           "head_only_mask", "inner_loop", "mask_and", "meta_loss", "partition"]
