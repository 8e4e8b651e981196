"""An algorithm of your own, on metajax's public API: MAML with the head zeroed for every task
(the "zero trick" of Kao et al. 2022), so no class is favoured before adaptation."""
import jax
import jax.numpy as jnp

import metajax


def zero_head_maml(model, objective, *, inner_lr, inner_steps, first_order=False,
                   unroll=True):
    model = metajax.as_model(model)

    def zero_head(params):
        head = model.head_params(params)
        return model.replace_head(params, jax.tree_util.tree_map(jnp.zeros_like, head))

    def loss_fn(state, train):
        def loss(params, batch, key=None):
            x, y = batch
            return objective.loss(model.predict(params, x, state=state, key=key, train=train), y)
        return loss

    def run(params, task, steps, first_order, key, state, train):
        support, (xq, yq) = task
        inner_key, query_key = metajax.task_keys(key) if train else (None, None)
        adapted, inner_losses = metajax.inner_loop(
            zero_head(params), loss_fn(state, train), support, inner_lr=inner_lr, steps=steps,
            first_order=first_order, unroll=unroll, key=inner_key)
        pred, new_state = model.apply(adapted, xq, state=state, key=query_key, train=train)
        loss = objective.loss(pred, yq)
        return loss, (metajax.task_metrics(objective, pred, yq, loss, inner_losses), new_state)

    def task_grad(params, task, step=0, *, key=None, state=None):
        grads, (metrics, new_state) = jax.grad(run, has_aux=True)(
            params, task, inner_steps, first_order, key, state, True)
        return grads, metrics, new_state

    def adapt(params, support, steps, *, key=None, state=None):
        return metajax.inner_loop(zero_head(params), loss_fn(state, False), support,
                                  inner_lr=inner_lr, steps=steps, first_order=True)[0]

    def evaluate(params, task, steps, *, key=None, state=None):
        return run(jax.lax.stop_gradient(params), task, steps, True, None, state, False)[1][0]

    return metajax.MetaLearner(init=lambda params: params, task_grad=task_grad, adapt=adapt,
                               evaluate=evaluate)
