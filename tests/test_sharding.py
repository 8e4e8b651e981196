"""Task-parallel meta-steps: 4 forced CPU devices give the meta-gradient of one device."""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import functools, jax, jax.numpy as jnp, numpy as np, optax
    assert jax.device_count() == 4, jax.devices()
    from metajax.algorithms import classification, make_algorithm
    from metajax.data.episodes import sample_episode
    from metajax.models import build_model, init_params
    from metajax.training import create_train_state, make_meta_step, sample_tasks
    from metajax.training.sharding import replicate, shard_tasks, task_mesh

    images = jax.random.randint(jax.random.PRNGKey(3), (12, 6, 10, 10, 1), 0, 256).astype(jnp.uint8)
    sample = functools.partial(sample_episode, ways=3, shots=1, queries=2)
    model = build_model("conv4", 3, hidden=4)
    learner = make_algorithm("maml", model, classification(), inner_lr=0.3, inner_steps=2)
    params = init_params(model, jax.random.PRNGKey(0), jnp.zeros((3, 10, 10, 1)))
    opt = optax.sgd(0.1)
    state = create_train_state(learner, opt, params, jax.random.PRNGKey(1))
    mesh = task_mesh()

    tasks = shard_tasks(sample_tasks(sample, jax.random.split(jax.random.PRNGKey(2), 8), images), mesh)
    assert len(tasks[0][0].sharding.device_set) == 4

    one = make_meta_step(learner, opt, sample, 8)
    many = make_meta_step(learner, opt, sample, 8, mesh=mesh)
    s1, m1 = one(jax.tree_util.tree_map(jnp.array, state), images)  # donated: pass a copy
    s4, m4 = many(replicate(state, mesh), images)
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
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    import os
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-3000:]
