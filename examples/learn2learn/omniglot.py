"""learn2learn's Omniglot examples (maml_omniglot.py, ANIL, ProtoNets) in metajax.

    python omniglot.py OMNIGLOT_DIR --algo maml|fomaml|anil|metasgd|protonets [--steps N]

The split lives on the device as one uint8 array; every step draws its meta-batch of tasks there
(no DataLoader), maps the learner's one-task gradient over them and applies Adam, all jitted.
"""
import argparse

import jax
import jax.numpy as jnp
import optax

import metajax
from metajax.algorithms import metasgd
from metajax.data import load_omniglot, sample_episode
from metajax.training import batch_task_grads, map_tasks

ALGOS = {"maml": metajax.maml, "fomaml": metajax.fomaml, "anil": metajax.anil,
         "metasgd": metasgd, "protonets": metajax.protonets}
parser = argparse.ArgumentParser()
parser.add_argument("data_dir")
parser.add_argument("--algo", choices=ALGOS, default="maml")
parser.add_argument("--steps", type=int, default=1000)
parser.add_argument("--meta-batch", type=int, default=32)
parser.add_argument("--eval-tasks", type=int, default=100)
args = parser.parse_args()
WAYS, SHOTS, QUERIES = 5, 1, 5

# l2l: tasksets = l2l.vision.benchmarks.get_tasksets("omniglot", train_ways=5, train_samples=6, ...)
splits = load_omniglot(args.data_dir)               # uint8 (classes, 20, 28, 28, 1) per split
train, test = jax.device_put(splits.train), jax.device_put(splits.test)

# l2l: maml = l2l.algorithms.MAML(model, lr=0.4); for ANIL, MAML around the head alone
model = metajax.build_model("conv4", num_outputs=WAYS)
learner = ALGOS[args.algo](model, metajax.classification(), inner_lr=0.4, inner_steps=1)
params = learner.init(metajax.init_params(model, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1))))
optimizer = optax.adam(1e-3)
opt_state = optimizer.init(params)


def draw(key, images, count):                       # l2l: [taskset.sample() for _ in range(count)]
    return jax.vmap(lambda k: sample_episode(k, images, ways=WAYS, shots=SHOTS,
                                             queries=QUERIES))(jax.random.split(key, count))


@jax.jit
def meta_step(params, opt_state, key, images):
    tasks = draw(key, images, args.meta_batch)
    # l2l: per task clone(), adapt(), query loss .backward(); here the mean gradient of all tasks
    grads, metrics, _ = batch_task_grads(learner, params, tasks)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics


@jax.jit
def test_accuracy(params, key, images):             # adapt with 3 steps, score the query set
    tasks = draw(key, images, args.eval_tasks)
    return map_tasks(lambda task: learner.evaluate(params, task, 3), tasks)["outer/acc"].mean()


key = jax.random.PRNGKey(1)
for step in range(args.steps):
    key, step_key = jax.random.split(key)
    params, opt_state, metrics = meta_step(params, opt_state, step_key, train)
    if step % 100 == 0 or step == args.steps - 1:
        print(f"step {step}: train query accuracy {float(metrics['outer/acc']):.3f}")
print(f"test accuracy ({args.eval_tasks} tasks): "
      f"{float(test_accuracy(params, jax.random.PRNGKey(2), test)):.3f}")
