"""Algorithms by name, as used by the CLI and configs."""
from __future__ import annotations

from metajax.algorithms.base import MetaLearner
from metajax.algorithms.maml import anil, fomaml, maml, pretrain
from metajax.algorithms.mamlpp import mamlpp
from metajax.algorithms.metasgd import metasgd
from metajax.algorithms.reptile import reptile

ALGORITHMS = {
    "maml": maml,
    "fomaml": fomaml,
    "anil": anil,
    "reptile": reptile,
    "metasgd": metasgd,
    "mamlpp": mamlpp,
    "pretrain": pretrain,
}
# Algorithms whose inner loop can take a mask (test-time freezing); the others adapt a fixed part.
MASKABLE = ("maml", "fomaml", "metasgd")


def make_algorithm(name: str, model, objective, *, inner_lr: float, inner_steps: int,
                   unroll: int | bool = True, mask=None, **options) -> MetaLearner:
    """Builds the named algorithm; raises a ValueError listing the known names otherwise.

    ``mask`` (which params the inner loop adapts) is accepted by the algorithms in ``MASKABLE``;
    ``options`` are the algorithm's own switches (e.g. MAML++'s ``msl=True``).
    """
    try:
        factory = ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)} "
                         "(e.g. --algo maml)") from None
    if mask is None:
        return factory(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, unroll=unroll,
                       **options)
    if name not in MASKABLE:
        raise ValueError(f"--freeze needs an algorithm that adapts the body in its inner loop "
                         f"({', '.join(MASKABLE)}); {name} does not, so there is nothing to freeze")
    return factory(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, unroll=unroll,
                   mask=mask, **options)
