"""Adaptation core: pure, single-task inner loops."""
from metajax.core.adapt import adapt, inner_loop, meta_loss
from metajax.core.partition import (broadcast_mask, combine, freeze_mask, head_only_mask,
                                    partition)

__all__ = ["adapt", "broadcast_mask", "combine", "freeze_mask", "head_only_mask", "inner_loop",
           "meta_loss", "partition"]
