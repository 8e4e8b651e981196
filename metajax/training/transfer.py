"""Starting a run from another run's body, and training only a head (Raghu et al., Table 5).

``--init-from RUN --train head``: the new run's body is ``RUN``'s (bit for bit), its head is
freshly initialised for the new task shape, and the body stays frozen in both loops: the inner
loop adapts only the head (a head mask), and the outer optimiser's updates of every body leaf
are zero (``optax.multi_transform`` with ``set_to_zero``), so each checkpoint's body equals
``RUN``'s. ``--init-from random --train head`` is the random-features regime. When ``RUN`` is a
several-seed run (``--seeds``), seed ``s`` of the new run starts from ``RUN/seed_<s>``.
"""
from __future__ import annotations

import re
from pathlib import Path

import jax
import optax

RANDOM = "random"
_CHECKPOINT_NAME = re.compile(r"^step_(\d+)\.msgpack$")


def resolve_source(source: str) -> tuple[Path, int | None]:
    """``(run folder, step or None for the newest)`` of a run folder or a checkpoint file."""
    path = Path(source).expanduser()
    match = _CHECKPOINT_NAME.match(path.name)
    if path.is_file() and match:
        return path.parent.parent, int(match.group(1))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--init-from {source}: not a metajax run folder (no "
                                "config.json) nor one of its checkpoints/step_*.msgpack files; "
                                "give a trained run, or 'random' for a random body")
    return path, None


def source_for_seed(source: str, seed: int) -> str:
    """The run whose body seed ``seed`` starts from: ``source``, or its ``seed_<seed>`` folder
    when ``source`` is a several-seed run (``--seeds``): each seed takes the same seed's body."""
    own = Path(source).expanduser() / f"seed_{seed}"
    if (own / "config.json").is_file() and not (Path(source).expanduser() / "checkpoints").is_dir():
        return str(own)
    return source


def _keys(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)


def _body_shapes(model, params) -> dict:
    head = model.head_path(params)
    return {"/".join(map(str, keys)): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
            if (keys := _keys(path))[:len(head)] != head}


def body_from(source: str, model, params, model_state):
    """``params`` with the body of the run ``source`` (its model params at that checkpoint),
    and that run's model state (batch-norm statistics) when it has the same structure.

    Raises:
      ValueError: the body of ``source`` differs from this model's (names each difference).
    """
    from metajax.analysis.runs import TrainedRun  # (imports the training loop)

    folder, step = resolve_source(source)
    trained = TrainedRun(folder)
    step = trained.steps[-1] if step is None else step
    theirs = trained.model_params(trained.meta_params(step))
    mine, other = _body_shapes(model, params), _body_shapes(trained.model, theirs)
    differences = [f"{name}: {other.get(name, 'missing')} there, {mine.get(name, 'missing')} "
                   "here" for name in sorted(set(mine) | set(other))
                   if mine.get(name) != other.get(name)]
    if differences:
        shown = "; ".join(differences[:4]) + (f"; and {len(differences) - 4} more"
                                              if len(differences) > 4 else "")
        raise ValueError(f"--init-from {source}: its body differs from this run's model "
                         f"({shown}); use a run trained with the same --model, --hidden and "
                         "image size")
    started = model.replace_head(theirs, model.head_params(params))
    their_state = trained.model_state(step)
    if their_state and (jax.tree_util.tree_structure(their_state)
                        == jax.tree_util.tree_structure(model_state)):
        model_state = their_state
    return started, model_state


def head_only(optimizer: optax.GradientTransformation, model,
              learner) -> optax.GradientTransformation:
    """``optimizer`` on the head's meta-parameters; zero updates for every other leaf (the body,
    and per-parameter quantities of the body such as Meta-SGD's rates)."""
    def labels(meta):
        head = model.head_path(learner.params_of(meta))

        def label(path, _):
            keys = _keys(path)
            on_head = any(keys[i:i + len(head)] == head for i in range(len(keys)))
            return "train" if on_head else "frozen"
        return jax.tree_util.tree_map_with_path(label, meta)

    return optax.multi_transform({"train": optimizer, "frozen": optax.set_to_zero()}, labels)

