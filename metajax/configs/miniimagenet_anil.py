"""ANIL on MiniImageNet 5-way 1-shot with the paper's settings (Raghu et al. 2020, appendix;
Finn et al. 2017 for the rest): Conv4 with 32 filters and max-pooling, meta-batch 4, 5 inner steps
of rate 0.01 (10 at test time), 15 queries per class, Adam 1e-3, 30,000 meta-steps ("All models
were trained for 30000 iterations", appendix; 3 seeds: add --seeds 0,1,2).
Batch norm as in Finn's code, which the paper ran: a learned offset only (TF's batch_norm
default, scale=False), outside the inner loop (ANIL's adapts only the head anyway); the head on
the flattened conv4 map (5x5x32). The paper reports 46.7 +- 0.4% test accuracy."""
from metajax.configs import default


def get_config():
    return default.get_config().replace(
        algo="anil", dataset="miniimagenet", model="conv4-pool", hidden=32, ways=5, shots=1,
        query=15, meta_batch=4, inner_steps=5, eval_inner_steps=10, inner_lr=0.01, meta_lr=1e-3,
        steps=30000, bn="offset-only", eval_every=2000, eval_tasks=200, checkpoint_every=500)
