"""Second-order MAML on Omniglot 5-way 1-shot (Finn et al.: 1 inner step, alpha 0.4, batch 32).

metajax's own Conv4, not Finn's code exactly, and the config of every committed Omniglot 5-way
result: the head sees the flattened conv4 map (Finn: its spatial mean), batch norm learns scale
and offset and is adapted in the inner loop (Finn: offset only, outside it), 5 queries per class
(Finn: 1) and 4,000 meta-steps (Finn: 60,000). The reference protocol is
``--head-input pool --bn offset-only --adapt-bn false --query 1`` (as the
``raghu_table1_omniglot20w1s_*`` configs set it for 20-way).
"""
from metajax.configs import default


def get_config():
    return default.get_config().replace(
        algo="maml", dataset="omniglot", ways=5, shots=1, query=5, meta_batch=32,
        inner_steps=1, eval_inner_steps=10, inner_lr=0.4, meta_lr=1e-3, steps=4000,
        eval_every=500, eval_tasks=200, checkpoint_every=250)
