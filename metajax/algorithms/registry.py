"""Algorithms by name, as used by the CLI and configs."""
from __future__ import annotations

from metajax.algorithms.maml import anil, fomaml, maml, pretrain
from metajax.algorithms.base import MetaLearner

ALGORITHMS = {
    "maml": maml,
    "fomaml": fomaml,
    "anil": anil,
    "pretrain": pretrain,
}


def make_algorithm(name: str, model, objective, *, inner_lr: float, inner_steps: int,
                   unroll: int | bool = True) -> MetaLearner:
    """Builds the named algorithm; raises a ValueError listing the known names otherwise."""
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)} "
                         "(e.g. --algo maml)") from None
    return factory(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, unroll=unroll)
