"""Any ``flax.linen`` module as pure functions of (params, model state, RNG key, mode).

Algorithms never call ``module.apply`` themselves: they call :class:`FunctionalModel`, which

- threads the module's non-parameter collections (stock ``nn.BatchNorm``'s ``batch_stats``) as an
  explicit ``state`` in and out of every call;
- gives stock ``nn.Dropout`` a ``"dropout"`` key when one is passed and makes it deterministic
  outside training;
- sets the mode of stock ``nn.BatchNorm`` and ``nn.Dropout`` itself, by intercepting their
  ``__call__`` (``flax.linen.intercept_methods``): a module needs no ``train`` flag, and one
  that has such a flag or fixes ``use_running_average=``/``deterministic=`` in its constructor is
  overridden consistently. Modes:

  ========================  ===========================  ===============  ==================
  call                      batch norm normalises with   dropout          running averages
  ========================  ===========================  ===============  ==================
  ``train=True``            the batch's statistics       on (needs key)   updated, returned
  ``train=False, bn=batch`` the batch's statistics       off              unchanged
  ``train=False, bn=running`` the running averages      off              unchanged
  ========================  ===========================  ===============  ==================

- splits the network at its head, for ANIL, NIL, freezing and analysis: ``embed`` returns the
  head's input, ``apply_head`` runs the head alone. The head is the module at ``head`` (a path
  such as ``"head"`` or ``"classifier/out"``, or a function ``params -> path``); by default the
  top-level ``"head"`` subtree if there is one, else the last ``nn.Dense`` the forward pass calls.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

PyTree = Any
HeadSpec = str | tuple | Callable[[PyTree], Any] | None

# Collections that are outputs of a call (sown values), not state carried between calls.
_SOWN = ("intermediates", "moments")


def _path_tuple(path) -> tuple[str, ...]:
    if isinstance(path, str):
        return tuple(k for k in path.split("/") if k)
    return tuple(str(k) for k in path)


def _call_in_mode(module, attribute, value, next_fun, args, kwargs):
    """Calls a stock layer with ``attribute=value`` at call time, whatever its constructor said."""
    kwargs = dict(kwargs)
    if len(args) > 2:  # nn.Dropout(x, deterministic, rng)
        kwargs["rng"] = args[2]
    kwargs[attribute] = value
    saved = getattr(module, attribute)
    # Flax refuses a value given both to the constructor and the call; the constructor's value is
    # the user's default mode, which metajax replaces for this call only.
    object.__setattr__(module, attribute, None)
    try:
        return next_fun(args[0], **kwargs)
    finally:
        object.__setattr__(module, attribute, saved)


def _mode_interceptor(train: bool, running: bool, has_key: bool, record=None):
    def intercept(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        module = context.module
        if record is not None:
            record(module, args)
        if isinstance(module, nn.BatchNorm):
            return _call_in_mode(module, "use_running_average", running, next_fun, args, kwargs)
        if isinstance(module, nn.Dropout):
            if train and not has_key and module.rate > 0:
                raise ValueError(
                    f"the model's nn.Dropout at {'/'.join(module.path) or 'top level'} needs a "
                    "random key in training: pass key=... to the algorithm's task_grad/adapt "
                    "(metajax's training step passes one per task and inner step)")
            return _call_in_mode(module, "deterministic", not train, next_fun, args, kwargs)
        return next_fun(*args, **kwargs)
    return intercept


@dataclasses.dataclass(frozen=True, eq=False)
class FunctionalModel:
    """A Flax module seen as pure functions; build one with :func:`as_model`.

    Attributes:
      module: the ``flax.linen`` module (called as ``module.apply(variables, x)``).
      head: where the head is (see the module docstring); ``None``: the default rule.
      rng_names: the RNG streams the module draws from in training (each gets the call's key).
      eval_bn: what batch norm normalises with outside training, ``"batch"`` (the batch's own
        statistics: transductive, as MAML evaluates) or ``"running"`` (the running averages).
      compute_dtype: ``"float32"`` or ``"bfloat16"``: the forward pass (and so its derivatives)
        runs in this dtype; params, state, outputs and losses stay float32 (mixed precision with
        float32 master weights).
    """

    module: nn.Module
    head: HeadSpec = None
    rng_names: tuple[str, ...] = ("dropout",)
    eval_bn: str = "batch"
    compute_dtype: str = "float32"
    _memo: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    # -- construction -------------------------------------------------------------------------
    def init(self, key, x) -> tuple[PyTree, PyTree]:
        """Initial ``(params, state)`` for inputs like ``x``; ``state`` is ``{}`` for a stateless model.

        ``state`` holds every collection but ``params`` (e.g. ``{"batch_stats": ...}``).
        """
        variables = init_variables(self.module, key, x)
        self._resolve(variables["params"], x)
        state = {k: v for k, v in variables.items() if k != "params" and k not in _SOWN}
        return variables["params"], state

    # -- forward passes -----------------------------------------------------------------------
    def apply(self, params, x, *, state=None, key=None, train: bool = True,
              bn: str | None = None, method=None, **kwargs):
        """The module's output for a batch ``x``, and the model state after the call.

        Args:
          params: the ``params`` collection.
          x: a batch of inputs.
          state: the other collections (``{}``/``None``: none).
          key: RNG key for dropout (and any stream in ``rng_names``); needed in training when
            the model draws random numbers.
          train: training mode (see the module docstring).
          bn: outside training, ``"batch"`` or ``"running"`` (default: ``eval_bn``).
          method, kwargs: passed to ``module.apply``.

        Returns:
          ``(output, new_state)``; ``new_state`` is ``state`` unless ``train`` updated it.
        """
        return self._apply(params, x, state, key, train, bn, None, method, kwargs)

    def predict(self, params, x, *, state=None, key=None, train: bool = True, bn: str | None = None):
        """The output alone (the updated state is dropped)."""
        return self.apply(params, x, state=state, key=key, train=train, bn=bn)[0]

    def embed(self, params, x, *, state=None, key=None, train: bool = True, bn: str | None = None):
        """The head's input for a batch ``x`` (the penultimate features), and the new state.

        Needs only the body's params: the head is not on the path to the features, so no gradient
        reaches it and XLA removes its computation.
        """
        captured = {}
        head = self.head_path(params, x)

        def record(module, args):
            if module.path == head and "features" not in captured:
                captured["features"] = args[0]
                self._memo.setdefault(("head_module", head), module.clone(parent=None))

        _, new_state = self._apply(params, x, state, key, train, bn, record, None, {})
        if "features" not in captured:
            raise ValueError(f"the model never called its head {'/'.join(head)!r}; name the "
                             "head module with head=... (see metajax.as_model)")
        return _as_float32(captured["features"]), new_state

    def apply_head(self, head_params, features, *, key=None, train: bool = True,
                   bn: str | None = None):
        """The head alone on ``features`` (the output of :meth:`embed`)."""
        head = self._memo.get("head")
        module = self._memo.get(("head_module", head))
        if module is None:
            raise ValueError("apply_head needs the head module: call embed (or init) once first")
        running = (bn or ("batch" if train else self.eval_bn)) == "running"
        interceptor = _mode_interceptor(train, running, key is not None)
        rngs = {name: key for name in self.rng_names} if key is not None else None
        with nn.intercept_methods(interceptor):
            return _as_float32(module.apply(self._cast({"params": head_params}),
                                            self._cast(features), rngs=rngs))

    # -- the head ------------------------------------------------------------------------------
    def head_path(self, params, x=None) -> tuple[str, ...]:
        """The params path of the head (see the module docstring)."""
        if callable(self.head):
            return _path_tuple(self.head(params))
        if self.head is not None:
            path = _path_tuple(self.head)
        elif "head" in params:
            path = ("head",)
        elif "head" in self._memo:
            path = self._memo["head"]
        elif x is not None:
            path = self._last_dense(params, x)
        else:
            raise ValueError("this model has no top-level 'head'; call init first or name the "
                             "head with metajax.as_model(module, head='path/to/head')")
        node = params
        for k in path:
            if not isinstance(node, dict) or k not in node:
                raise ValueError(f"head {'/'.join(path)!r} is not in the model's params (top "
                                 f"level: {', '.join(sorted(params))}); pass head= a params path")
            node = node[k]
        self._memo["head"] = path
        return path

    def head_mask(self, params) -> PyTree:
        """True on the head's leaves (ANIL's inner loop), False elsewhere."""
        head = self.head_path(params)

        def on_head(path, _):
            keys = tuple(getattr(k, "key", None) for k in path)
            return keys[:len(head)] == head
        return jax.tree_util.tree_map_with_path(on_head, params)

    def split(self, params) -> tuple[PyTree, PyTree]:
        """``(body, head)``: the head subtree, and ``params`` without it."""
        head = self.head_path(params)
        return _drop(params, head), _get(params, head)

    def head_params(self, params) -> PyTree:
        """The head's subtree of ``params``."""
        return _get(params, self.head_path(params))

    def replace_head(self, params, head_params) -> PyTree:
        """``params`` with the head's subtree replaced by ``head_params``."""
        return _put(params, self.head_path(params), head_params)

    # -- layers, for freezing and analysis ----------------------------------------------------
    def layers(self, params) -> list[tuple[str, ...]]:
        """The body's layers in the order the forward pass calls them, as params paths.

        A layer is a direct child of ``params["body"]`` when there is one, else a top-level
        params subtree; the head is not among them. The order is recorded by :meth:`init`
        (until then, sorted by name).
        """
        head = self.head_path(params)
        base = ("body",) if isinstance(params.get("body"), dict) and head != ("body",) else ()
        children = params["body"] if base else params
        found = [base + (k,) for k in children if base + (k,) != head[:len(base) + 1]]
        order = self._memo.get("call_order", [])
        rank = {path: i for i, path in enumerate(order)}
        return sorted(found, key=lambda p: (rank.get(p, len(order)), p))

    @staticmethod
    def layer_name(path) -> str:
        """A layer's display name: its path without a leading ``body/`` (``conv1``, ``Dense_0``)."""
        path = tuple(path)
        return "/".join(path[1:] if path[:1] == ("body",) and len(path) > 1 else path)

    def activations(self, params, x, *, state=None, bn: str | None = None) -> dict:
        """Every body layer's output and the head's (``"head"``) for a batch ``x``, in evaluation
        mode, keyed by :meth:`layer_name`, in call order."""
        wanted = {tuple(p): self.layer_name(p) for p in self.layers(params)}
        head = self.head_path(params, x)
        outputs = {}

        def record_output(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__":
                path = tuple(context.module.path)
                name = "head" if path == head else wanted.get(path)
                if name is not None and name not in outputs:
                    outputs[name] = out
            return out

        with nn.intercept_methods(record_output):
            self._apply(params, x, state, None, False, bn, None, None, {})
        return outputs

    # -- internals -----------------------------------------------------------------------------
    def _resolve(self, params, x):
        path = self.head_path(params, x)
        order = []

        def record(module, args):
            if module.path == path:
                self._memo.setdefault(("head_module", path), module.clone(parent=None))
            if tuple(module.path) not in order:
                order.append(tuple(module.path))

        self._trace(params, x, record)
        self._memo["call_order"] = order

    def _last_dense(self, params, x) -> tuple[str, ...]:
        calls = []

        def record(module, args):
            if isinstance(module, nn.Dense):
                calls.append(module.path)

        self._trace(params, x, record)
        if not calls:
            raise ValueError("the model has no top-level 'head' and calls no nn.Dense; name its "
                             "head with metajax.as_model(module, head='path/to/head')")
        return tuple(calls[-1])

    def _trace(self, params, x, record):
        """Runs ``record(module, args)`` on every module call of a shape-only forward pass."""
        jax.eval_shape(lambda p, s, x: self._apply(p, x, s, None, False, "batch", record, None,
                                                   {})[0],
                       params, _shape_state(self.module, x), x)

    def _apply(self, params, x, state, key, train, bn, record, method, kwargs):
        if bn is None:
            bn = "batch" if train else self.eval_bn
        if bn not in ("batch", "running"):
            raise ValueError(f"unknown batch-norm statistics {bn!r}; use 'batch' or 'running'")
        if train and bn == "running":
            raise ValueError("training normalises with batch statistics; bn='running' is for "
                             "evaluation (train=False)")
        state = state or {}
        running = bn == "running"
        interceptor = _mode_interceptor(train, running, key is not None, record)
        rngs = {name: key for name in self.rng_names} if key is not None else None
        mutable = list(state) if (state and not running) else False
        with nn.intercept_methods(interceptor):
            result = self.module.apply(self._cast({"params": params, **state}), self._cast(x),
                                       rngs=rngs, mutable=mutable, method=method, **kwargs)
        if not mutable:
            return _as_float32(result), state
        out, updated = result
        if not train:  # statistics of an evaluation batch never leak into the running averages
            return _as_float32(out), state
        updated = jax.tree_util.tree_map(lambda new, old: new.astype(old.dtype),
                                         {k: updated[k] for k in state}, state)
        return _as_float32(out), {**state, **updated}

    def _cast(self, tree):
        if self.compute_dtype == "float32":
            return tree
        dtype = jnp.dtype(self.compute_dtype)
        return jax.tree_util.tree_map(
            lambda a: a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a,
            tree)


def _as_float32(tree):
    """Lower-precision floating outputs back to float32 (losses and metrics are float32)."""
    def up(a):
        dtype = jnp.result_type(a)
        if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
            return a.astype(jnp.float32)
        return a
    return jax.tree_util.tree_map(up, tree)


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _drop(tree, path):
    if len(path) == 1:
        return {k: v for k, v in tree.items() if k != path[0]}
    return {**tree, path[0]: _drop(tree[path[0]], path[1:])}


def _put(tree, path, value):
    if len(path) == 1:
        return {**tree, path[0]: value}
    return {**tree, path[0]: _put(tree.get(path[0], {}), path[1:], value)}


def _init_variables(module, key, x):
    # Batch norm initialises its running averages in batch mode; dropout is off (no key yet).
    with nn.intercept_methods(_mode_interceptor(False, False, False)):
        return module.init(key, x)


def _shape_state(module, x):
    variables = jax.eval_shape(lambda: _init_variables(module, jax.random.PRNGKey(0), x))
    return {k: v for k, v in variables.items() if k != "params" and k not in _SOWN}


# One compiled init per (module, input shape): run eagerly, Flax's init dispatches (and
# compiles) a hundred small ops.
init_variables = jax.jit(_init_variables, static_argnums=0)


def as_model(model, *, head: HeadSpec = None, eval_bn: str | None = None,
             compute_dtype: str | None = None) -> FunctionalModel:
    """Wraps a ``flax.linen`` module (a ``FunctionalModel`` passes through, ``head`` replacing its own).

    Args:
      model: any ``flax.linen.Module`` whose ``__call__(x)`` maps a batch to outputs, or a
        ``FunctionalModel``.
      head: the head's params path (``"head"``, ``"Dense_3"``, ``"classifier/out"``) or a
        function ``params -> path``; ``None``: the ``"head"`` subtree, else the last ``nn.Dense``.
      eval_bn: ``"batch"`` or ``"running"`` (see :class:`FunctionalModel`).
      compute_dtype: ``"float32"`` or ``"bfloat16"`` (see :class:`FunctionalModel`).
    """
    if compute_dtype not in (None, "float32", "bfloat16"):
        raise ValueError(f"unknown compute dtype {compute_dtype!r}; use float32 or bfloat16")
    if eval_bn not in (None, "batch", "running"):
        raise ValueError(f"unknown batch-norm statistics {eval_bn!r}; use 'batch' or 'running'")
    if isinstance(model, FunctionalModel):
        changes = {k: v for k, v in (("head", head), ("eval_bn", eval_bn),
                                     ("compute_dtype", compute_dtype)) if v is not None}
        return dataclasses.replace(model, **changes, _memo={}) if changes else model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a flax.linen.Module, got {type(model).__name__}; a model "
                        "factory must return a Flax module")
    return FunctionalModel(model, head=head, eval_bn=eval_bn or "batch",
                           compute_dtype=compute_dtype or "float32")


__all__ = ["FunctionalModel", "as_model"]
