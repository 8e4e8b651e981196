"""Second-order MAML on Omniglot 5-way 1-shot (Finn et al.: 1 inner step, alpha 0.4, batch 32)."""
from metajax.configs import default


def get_config():
    return default.get_config().replace(
        algo="maml", dataset="omniglot", ways=5, shots=1, query=5, meta_batch=32,
        inner_steps=1, eval_inner_steps=10, inner_lr=0.4, meta_lr=1e-3, steps=4000,
        eval_every=500, eval_tasks=200, checkpoint_every=250)
