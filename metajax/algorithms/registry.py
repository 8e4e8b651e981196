"""Algorithms by name (a CLI convenience) or by import path (``package.module:factory``)."""
from __future__ import annotations

import inspect

from metajax.algorithms.base import MetaLearner, supports
from metajax.algorithms.boil import boil
from metajax.algorithms.maml import anil, fomaml, maml, multitask, pretrain
from metajax.algorithms.mamlpp import mamlpp
from metajax.algorithms.metasgd import metasgd
from metajax.algorithms.multiclass import multiclass
from metajax.algorithms.protomaml import protomaml
from metajax.algorithms.protonets import protonets
from metajax.algorithms.reptile import reptile
from metajax.plugins import is_import_path, load_object

ALGORITHMS = {
    "maml": maml,
    "fomaml": fomaml,
    "anil": anil,
    "boil": boil,
    "reptile": reptile,
    "metasgd": metasgd,
    "mamlpp": mamlpp,
    "multitask": multitask,
    "pretrain": pretrain,  # multitask's earlier name: algorithm_name() writes "multitask"
    "multiclass": multiclass,
    "protonets": protonets,
    "protomaml": protomaml,
}


def algorithm_name(factory) -> str:
    """How a factory is written in ``config.json``: its built-in name, else its import path."""
    for name, known in ALGORITHMS.items():
        if known is factory:
            return name
    return f"{factory.__module__}:{factory.__qualname__}"


def get_factory(name: str):
    """The factory of a named algorithm or of an import path ``package.module:factory``."""
    if is_import_path(name):
        return load_object(name, flag="--algo", what="an algorithm factory")
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of: {', '.join(ALGORITHMS)}, "
                         "or give an import path package.module:factory (e.g. --algo maml)"
                         ) from None


def make_algorithm(name, model, objective, *, inner_lr: float, inner_steps: int,
                   unroll: int | bool = True, mask=None, ways: int | None = None,
                   **options) -> MetaLearner:
    """Builds an algorithm from its name, import path or factory.

    ``mask`` (which params the inner loop adapts) goes to factories that take one (see
    ``metajax.algorithms.base.supports``); ``options`` are the algorithm's own switches (e.g.
    MAML++'s ``msl=True``); ``unroll`` is passed where the factory takes it.
    """
    factory = name if callable(name) else get_factory(name)
    label = getattr(factory, "__name__", str(name))
    if mask is not None:
        if not supports(factory, "mask"):
            raise ValueError(f"--freeze needs an algorithm whose inner loop adapts a chosen part "
                             f"of the model (its factory takes mask=, like maml, fomaml, "
                             f"metasgd, boil); {label} adapts a fixed part, so there is nothing "
                             "to freeze")
        options["mask"] = mask
    if supports(factory, "unroll"):
        options["unroll"] = unroll
    if supports(factory, "ways"):
        if ways is None:
            raise ValueError(f"{label} needs ways= (N of the N-way tasks it is evaluated on)")
        options["ways"] = ways
    unknown = [k for k in options if not supports(factory, k)]
    if unknown:
        raise ValueError(f"algorithm {label} does not take option(s) {', '.join(unknown)}")
    try:
        inspect.signature(factory).bind(model, objective, inner_lr=inner_lr,
                                        inner_steps=inner_steps, **options)
    except TypeError as e:
        raise ValueError(f"{label} is not an algorithm factory: metajax calls factory(model, "
                         f"objective, *, inner_lr, inner_steps, ...) like metajax.maml ({e})"
                         ) from None
    learner = factory(model, objective, inner_lr=inner_lr, inner_steps=inner_steps, **options)
    if not isinstance(learner, MetaLearner):
        raise ValueError(f"algorithm factory {label} returned a {type(learner).__name__}, not a "
                         "metajax.MetaLearner")
    return learner
