"""MuJoCo physics behind one interface, two engines: the C library (called from compiled JAX
code through ``jax.pure_callback``) and MJX (MuJoCo in JAX, traced into the computation).

The simulation state carried through a rollout is ``(qpos, qvel, qacc_warmstart)``: with ctrl
that is all ``mj_step`` reads for a model without activations or mocap bodies, so every call is a
pure function of its inputs and batch elements never share solver warm starts. The model is the
one the installed ``gymnasium`` package ships (it is loaded from there, not copied).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class PhysicsState(NamedTuple):
    """One environment's simulation state and the body position read after the last step."""

    qpos: jax.Array
    qvel: jax.Array
    qacc_warmstart: jax.Array
    body_pos: jax.Array  # xpos of the tracked body, as MuJoCo computed it during the step


@dataclasses.dataclass(frozen=True)
class Physics:
    """A MuJoCo model stepped ``frame_skip`` times per environment step.

    Attributes:
      engine: ``"c"`` or ``"mjx"``.
      timestep: the model's timestep (seconds).
      frame_skip: physics steps per environment step.
      init_qpos, init_qvel: the model's initial state (tuples, so the object stays hashable).
      reset: ``reset(qpos, qvel) -> PhysicsState`` (forward kinematics for ``body_pos``).
      step: ``step(state, ctrl) -> PhysicsState``.
    """

    engine: str
    timestep: float
    frame_skip: int
    init_qpos: tuple
    init_qvel: tuple
    reset: Callable
    step: Callable


def gymnasium_model_path(name: str) -> Path:
    """Path of ``name`` (e.g. ``half_cheetah.xml``) among the installed gymnasium's MuJoCo assets."""
    try:
        import gymnasium
    except ImportError as e:
        raise ImportError("the HalfCheetah tasks load MuJoCo's model from the gymnasium package: "
                          "pip install 'metajax[rl]' (mujoco, mujoco-mjx, gymnasium)") from e
    path = Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} not found in the installed gymnasium ({path})")
    return path


def load_model(name: str):
    """The compiled ``mujoco.MjModel`` of a gymnasium asset."""
    import mujoco

    return mujoco.MjModel.from_xml_path(str(gymnasium_model_path(name)))


def make_physics(model_name: str, body: str, *, engine: str, frame_skip: int,
                 dtype=jnp.float32) -> Physics:
    """The ``engine`` physics of gymnasium's ``model_name``, tracking body ``body``.

    Args:
      model_name: asset file name, e.g. ``"half_cheetah.xml"``.
      body: the body whose position ``PhysicsState.body_pos`` reports.
      engine: ``"c"`` (MuJoCo's C library via ``jax.pure_callback``, a per-environment step loop
        on the host) or ``"mjx"`` (MJX, pure JAX: vmapped and compiled with the rollout).
      frame_skip: physics steps per environment step.
      dtype: dtype of the state arrays in JAX (MJX also simulates in it; C always in float64).
        float64 needs ``jax_enable_x64`` set process-wide (``jax.config.update``): the C
        engine's callbacks run on XLA's threads, which the thread-local ``jax.enable_x64``
        context does not reach.
    """
    import mujoco

    model = load_model(model_name)
    body_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, body)
    if body_id < 0:
        raise ValueError(f"{model_name} has no body {body!r}")
    init = dict(timestep=float(model.opt.timestep), frame_skip=frame_skip,
                init_qpos=tuple(map(float, model.qpos0)), init_qvel=(0.0,) * model.nv)
    if engine == "c":
        reset, step = _c_engine(model, body_id, frame_skip, dtype)
    elif engine == "mjx":
        reset, step = _mjx_engine(model, body_id, frame_skip, dtype)
    else:
        raise ValueError(f"unknown physics engine {engine!r}; use 'c' or 'mjx'")
    return Physics(engine=engine, reset=reset, step=step, **init)


def _c_engine(model, body_id: int, frame_skip: int, dtype):
    import mujoco

    nq, nv = model.nq, model.nv
    np_dtype = np.dtype(dtype)

    def host_step(qpos, qvel, warm, ctrl):
        # broadcast_all: every argument arrives with the same leading (vmapped) batch shape.
        batch = qpos.shape[:-1]
        flat = [np.asarray(x, np.float64).reshape(-1, x.shape[-1]) for x in (qpos, qvel, warm, ctrl)]
        out = [np.empty((len(flat[0]), n)) for n in (nq, nv, nv, 3)]
        data = mujoco.MjData(model)  # per call: thread-safe and free of state from other calls
        for i in range(len(flat[0])):
            data.qpos[:], data.qvel[:], data.qacc_warmstart[:], data.ctrl[:] = (x[i] for x in flat)
            mujoco.mj_step(model, data, nstep=frame_skip)
            out[0][i], out[1][i], out[2][i], out[3][i] = (
                data.qpos, data.qvel, data.qacc_warmstart, data.xpos[body_id])
        # The declared dtype, not the inputs': callbacks may run where x64 is not enabled.
        return tuple(x.reshape(*batch, x.shape[-1]).astype(np_dtype) for x in out)

    def host_kinematics(qpos):
        flat = np.asarray(qpos, np.float64).reshape(-1, nq)
        out = np.empty((len(flat), 3))
        data = mujoco.MjData(model)
        for i in range(len(flat)):
            data.qpos[:] = flat[i]
            mujoco.mj_kinematics(model, data)
            out[i] = data.xpos[body_id]
        return out.reshape(*qpos.shape[:-1], 3).astype(np_dtype)

    def reset(qpos, qvel):
        qpos, qvel = jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype)
        body_pos = jax.pure_callback(host_kinematics, jax.ShapeDtypeStruct((3,), dtype), qpos,
                                     vmap_method="broadcast_all")
        return PhysicsState(qpos, qvel, jnp.zeros((nv,), dtype), body_pos)

    def step(state: PhysicsState, ctrl):
        shapes = tuple(jax.ShapeDtypeStruct((n,), dtype) for n in (nq, nv, nv, 3))
        return PhysicsState(*jax.pure_callback(
            host_step, shapes, state.qpos, state.qvel, state.qacc_warmstart,
            jnp.asarray(ctrl, dtype), vmap_method="broadcast_all"))

    return reset, step


def _mjx_engine(model, body_id: int, frame_skip: int, dtype):
    from mujoco import mjx

    with jax.enable_x64(jnp.dtype(dtype) == jnp.float64):
        mx = mjx.put_model(model)
        blank = mjx.make_data(mx)

    def reset(qpos, qvel):
        qpos, qvel = jnp.asarray(qpos, dtype), jnp.asarray(qvel, dtype)
        data = mjx.kinematics(mx, blank.replace(qpos=qpos, qvel=qvel))
        return PhysicsState(qpos, qvel, jnp.zeros_like(qvel), data.xpos[body_id])

    def step(state: PhysicsState, ctrl):
        data = blank.replace(qpos=state.qpos, qvel=state.qvel,
                             qacc_warmstart=state.qacc_warmstart, ctrl=jnp.asarray(ctrl, dtype))
        data = jax.lax.fori_loop(0, frame_skip, lambda _, d: mjx.step(mx, d), data)
        return PhysicsState(data.qpos, data.qvel, data.qacc_warmstart, data.xpos[body_id])

    return reset, step
