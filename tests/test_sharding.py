"""Task-parallel meta-steps: 4 forced CPU devices give the meta-gradient of one device."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np, optax
    assert jax.device_count() == 4, jax.devices()
    from metajax.algorithms import make_algorithm, regression
    from metajax.data.sinusoid import sample_sinusoid_task
    from metajax.models import build_model, init_params
    from metajax.training import create_train_state, make_meta_step, sample_tasks
    from metajax.training.sharding import replicate, shard_tasks, task_mesh

    # A small MLP on sinusoid tasks: what is tested is how the task axis is split, not the model.
    sample = lambda key, data: sample_sinusoid_task(key, shots=5, queries=5)
    data = None  # sinusoid tasks are generated, not drawn from data
    model = build_model("mlp", 1, hidden=16)
    learner = make_algorithm("maml", model, regression(), inner_lr=0.01, inner_steps=2)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((5, 1)))
    opt = optax.sgd(0.1)
    state = create_train_state(learner, opt, params, jax.random.PRNGKey(1))
    mesh = task_mesh()

    tasks = shard_tasks(sample_tasks(sample, jax.random.split(jax.random.PRNGKey(2), 8), data), mesh)
    assert len(tasks[0][0].sharding.device_set) == 4

    one = make_meta_step(learner, opt, sample, 8, task_chunk=0)
    s1, m1 = one(jax.tree_util.tree_map(jnp.array, state), data)  # donated: pass a copy
    # Each device maps over its own tasks (chunk 1, the CPU default) or vmaps them (chunk 0).
    for chunk in (1, 0):
        many = make_meta_step(learner, opt, sample, 8, mesh=mesh, task_chunk=chunk)
        s4, m4 = many(replicate(jax.tree_util.tree_map(jnp.array, state), mesh), data)
        assert all(len(a.sharding.device_set) == 4 for a in jax.tree_util.tree_leaves(s4.params))
        for a, b in zip(jax.tree_util.tree_leaves(s1.params), jax.tree_util.tree_leaves(s4.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(m1["outer/loss"], m4["outer/loss"], rtol=1e-5)
    try:
        make_meta_step(learner, opt, sample, 6, mesh=mesh)
    except ValueError as e:
        assert "multiple of 4" in str(e)
    else:
        raise AssertionError("meta-batch 6 over 4 devices was accepted")
    print("OK")
""")


def test_four_devices_give_the_same_meta_step_as_one():
    import os
    env = {"XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
