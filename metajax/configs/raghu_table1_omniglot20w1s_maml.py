"""Raghu et al. (2020) Table 1, Omniglot 20-way 1-shot, MAML, under the paper's own protocol.

The paper uses Finn et al.'s TensorFlow code and model (its Appendix C): four 3x3 convolutions
of 64 filters with stride 2, batch norm, ReLU; images 28x28, so the head sees 64 features
(``head_input="pool"``: the mean of conv4's 2x2 map, 64 values); meta-batch 16, 5 inner
steps of 0.1. Finn's code learns only batch norm's offset and keeps it out of the inner loop
(``bn="offset-only"``, ``adapt_bn=False``), draws as many queries per class as shots (K = 1),
trains 60,000 iterations with Adam 1e-3 and tests with 10 inner steps.
"""
from metajax.configs import default


def get_config():
    return default.get_config().replace(
        algo="maml", dataset="omniglot", model="conv4", hidden=64, head_input="pool",
        bn="offset-only", adapt_bn=False, ways=20, shots=1, query=1, meta_batch=16,
        inner_steps=5, eval_inner_steps=10, inner_lr=0.1, meta_lr=1e-3, steps=60000,
        eval_every=2000, eval_tasks=200, checkpoint_every=1000)
