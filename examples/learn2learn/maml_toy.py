"""learn2learn's MAML loop in metajax, on MAML's sinusoid regression tasks.

    python maml_toy.py [STEPS]

learn2learn clones a module per task and mutates the clone; here the params are a pytree,
adaptation returns a new one, every task of the batch is mapped at once, and the step is jitted.
"""
import sys

import jax
import jax.numpy as jnp
import optax

import metajax
from metajax.data import sample_sinusoid_task

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
model = metajax.build_model("mlp", num_outputs=1)   # 1 -> 40 -> 40 -> 1, ReLU
params = metajax.init_params(model, jax.random.PRNGKey(0), jnp.zeros((1, 1)))
optimizer = optax.adam(1e-3)                        # l2l: optim.Adam(maml.parameters(), 1e-3)
opt_state = optimizer.init(params)


def loss_fn(params, batch):                         # l2l: loss(learner(x), y)
    x, y = batch
    return jnp.mean((model.apply({"params": params}, x) - y) ** 2)


def task_loss(params, key):
    support, query = sample_sinusoid_task(key, shots=10, queries=10)  # l2l: taskset.sample()
    # l2l: learner = maml.clone(); learner.adapt(loss(learner(x_support), y_support))
    adapted = metajax.adapt(params, loss_fn, support, inner_lr=0.01, steps=1)
    return loss_fn(adapted, query)                  # l2l: loss(learner(x_query), y_query)


@jax.jit
def meta_step(params, opt_state, key):
    keys = jax.random.split(key, 25)                # 25 tasks per meta-batch, drawn on the device
    # l2l: .backward() per task, then p.grad /= meta_batch; here the gradient of the batch mean,
    # through the inner step (second order; metajax.adapt(..., first_order=True) is FOMAML).
    loss, grads = jax.value_and_grad(
        lambda p: jax.vmap(task_loss, in_axes=(None, 0))(p, keys).mean())(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)  # l2l: opt.step()
    return optax.apply_updates(params, updates), opt_state, loss


key = jax.random.PRNGKey(1)
for step in range(steps):
    key, step_key = jax.random.split(key)
    params, opt_state, loss = meta_step(params, opt_state, step_key)
    if step % 500 == 0 or step == steps - 1:
        print(f"step {step}: query MSE after one inner step {float(loss):.3f}")
