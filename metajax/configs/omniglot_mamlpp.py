"""MAML++ on Omniglot 5-way 1-shot, all five parts on, sized for a CPU budget.

The paper trains 5 inner steps for 150 epochs x 500 steps on a GPU; here 3 inner steps (train and
test: the per-step rates and batch-norm sets are learned for 3 steps), meta-batch 16, 2000 steps,
first order for the first 500 (DA), multi-step loss annealed over 1000, cosine meta-LR to 1e-5,
and Adam with b2 = 0.99 (../shared/papers/how_to_train_your_maml.md: "Adam optimizer with
lr = 0.001, b1 = 0.9, b2=0.99"; metajax's default is Adam's 0.999).
"""
from metajax.configs import omniglot_maml


def get_config():
    return omniglot_maml.get_config().replace(
        algo="mamlpp", inner_steps=3, eval_inner_steps=3, inner_lr=0.4, meta_batch=16,
        steps=2000, options=dict(msl=True, msl_anneal_steps=1000, bnwb=True, bnrs=True, lslr=True),
        da_steps=500, meta_lr_schedule="cosine", min_meta_lr=1e-5, adam_b2=0.99)
