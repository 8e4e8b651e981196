"""A config file: start from a built-in config, change what your experiment needs."""
from metajax.configs import get_named_config


def get_config():
    return get_named_config("default").replace(
        dataset="folder", model="my_model:small_net", algo="maml",
        ways=3, shots=1, query=2, meta_batch=4, inner_steps=1, inner_lr=0.1,
        steps=20, eval_every=10, eval_tasks=8, eval_batch=4, checkpoint_every=10,
        log_every=5, eval_inner_steps=3, image_size=16)
