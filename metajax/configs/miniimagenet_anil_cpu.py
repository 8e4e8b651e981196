"""ANIL on MiniImageNet 5-way 1-shot within about an hour of a 2-core CPU.

The paper's settings (``miniimagenet_anil``) except 5 queries per class instead of 15 (the
query set dominates the cost of an ANIL step) and far fewer meta-steps; validation on 100 tasks
every 500 steps. Batch norm learns scale and offset, as in the committed CPU run
(experiments/miniimagenet_anil, 2026-11-30); the paper's offset-only is ``--bn offset-only``.
"""
from metajax.configs import miniimagenet_anil


def get_config():
    return miniimagenet_anil.get_config().replace(
        query=5, bn="scale-offset", steps=1500, eval_every=500, eval_tasks=100, checkpoint_every=250)
