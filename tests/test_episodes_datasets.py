"""The episode sampler on every dataset's real arrays, and evaluation vs. label permutation."""
from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from datagen import write_cifar100

from metajax.algorithms import anil, classification, maml
from metajax.algorithms.nil import nil
from metajax.data import load_cifar_fs, load_miniimagenet, sample_episode
from metajax.models import build_model, init_params

TASKS = 64


def _tag(images: np.ndarray) -> np.ndarray:
    """A copy whose first four channel-0 pixels encode (class, example), 16 bits each."""
    tagged = images.copy()
    c, e = np.meshgrid(np.arange(images.shape[0]), np.arange(images.shape[1]), indexing="ij")
    tagged[:, :, 0, :4, 0] = np.stack([c // 256, c % 256, e // 256, e % 256], axis=-1)
    return tagged


def _ids(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.rint(x[..., 0, :4, 0] * 255).astype(np.int64)
    return p[..., 0] * 256 + p[..., 1], p[..., 2] * 256 + p[..., 3]


@pytest.fixture(scope="module")
def datasets(omniglot_splits, miniimagenet_data_dir, tmp_path_factory):
    """One split of each dataset, with (ways, shots, queries) that it can serve."""
    cifar = load_cifar_fs(write_cifar100(tmp_path_factory.mktemp("cifar")))
    return {
        "omniglot": (omniglot_splits.test, (5, 1, 15)),
        "miniimagenet": (load_miniimagenet(miniimagenet_data_dir).test, (5, 1, 15)),
        "cifar-fs": (cifar.train, (5, 2, 4)),
    }


@pytest.mark.parametrize("name", ["omniglot", "miniimagenet", "cifar-fs"])
def test_episodes_on_real_arrays(datasets, name):
    images, (ways, shots, queries) = datasets[name]
    tagged = _tag(images)
    sample = jax.jit(jax.vmap(functools.partial(sample_episode, ways=ways, shots=shots,
                                                queries=queries), in_axes=(0, None)))
    (sx, sy), (qx, qy) = jax.tree.map(
        np.asarray, sample(jax.random.split(jax.random.key(1), TASKS), jnp.asarray(tagged)))
    assert sx.shape == (TASKS, ways * shots, *images.shape[2:]) and sx.dtype == np.float32
    assert qx.shape == (TASKS, ways * queries, *images.shape[2:])
    s_class, s_example = _ids(sx)
    q_class, q_example = _ids(qx)
    for t in range(TASKS):
        classes = []
        for label in range(ways):
            cs, cq = s_class[t][sy[t] == label], q_class[t][qy[t] == label]
            # One class per label, the same in support and query.
            assert len(set(cs) | set(cq)) == 1
            classes.append(cs[0])
            # Distinct examples, and support and query never share one.
            support, query = set(s_example[t][sy[t] == label]), set(q_example[t][qy[t] == label])
            assert len(support) == shots and len(query) == queries and not support & query
        assert len(set(classes)) == ways
    # The label -> class map is redrawn per task.
    assert len(set(s_class[:, 0].tolist())) > TASKS // 4
    # Apart from the tag, every sampled image is the real image, scaled to [0, 1].
    c, e = s_class[0, 0], s_example[0, 0]
    np.testing.assert_allclose(sx[0, 0, 1:], images[c, e, 1:] / 255.0, rtol=1e-6)


def test_labels_are_uniformly_permuted():
    """With 5 classes and 5 ways every task holds all classes; their label order must be a
    uniform permutation, which makes any head's accuracy, averaged over tasks, independent of
    how it numbers classes."""
    images = _tag(np.zeros((5, 4, 4, 4, 1), np.uint8))
    sample = jax.jit(jax.vmap(functools.partial(sample_episode, ways=5, shots=1, queries=1),
                              in_axes=(0, None)))
    (sx, _), _ = sample(jax.random.split(jax.random.key(0), 6000), jnp.asarray(images))
    orders = [tuple(row) for row in _ids(np.asarray(sx))[0].tolist()]
    counts = np.array([orders.count(p) for p in itertools.permutations(range(5))])
    assert counts.sum() == 6000 and counts.min() > 0  # all 120 orders occur (50 expected each)
    chi2 = ((counts - 50.0) ** 2 / 50.0).sum()
    assert chi2 < 180, chi2  # 119 degrees of freedom: P(chi2 > 180) < 1e-3 if uniform


def _relabel(task, perm):
    (xs, ys), (xq, yq) = task
    return (xs, perm[ys]), (xq, perm[yq])


@pytest.mark.parametrize("algo", ["anil", "maml", "nil"])
def test_evaluation_does_not_depend_on_label_numbering(datasets, algo):
    """Relabelling a task (label i -> perm[i]) leaves a symmetric learner's results unchanged:
    NIL, and MAML or ANIL from a zero head (all classes start equal)."""
    images, (ways, shots, queries) = datasets["cifar-fs"]
    # A small MLP on flattened images: the property is about labels, not the backbone, and an
    # MLP compiles in a fraction of a conv net's time.
    model = build_model("mlp", ways, hidden=16)
    sample = jax.vmap(functools.partial(sample_episode, ways=ways, shots=shots, queries=queries),
                      in_axes=(0, None))
    (xs, ys), (xq, yq) = sample(jax.random.split(jax.random.key(2), 8), jnp.asarray(images))
    tasks = (xs.reshape(*xs.shape[:2], -1), ys), (xq.reshape(*xq.shape[:2], -1), yq)
    params = init_params(model, jax.random.PRNGKey(0), tasks[0][0][0])
    params = {**params, "head": jax.tree.map(jnp.zeros_like, params["head"])}
    factory = {"anil": anil, "maml": maml, "nil": maml}[algo]
    learner = factory(model, classification(), inner_lr=0.5, inner_steps=3)
    if algo == "nil":
        learner = nil(learner, model, ways)
    evaluate = jax.jit(jax.vmap(lambda task: learner.evaluate(params, task, 3)))
    base = evaluate(tasks)
    for seed in (1, 2):
        perm = jnp.asarray(np.random.default_rng(seed).permutation(ways), jnp.int32)
        moved = evaluate(_relabel(tasks, perm))
        np.testing.assert_array_equal(moved["outer/acc"], base["outer/acc"])
        np.testing.assert_allclose(moved["outer/loss"], base["outer/loss"], rtol=1e-5, atol=1e-6)
    # The tasks are not trivial: adaptation moved the loss away from log(ways).
    if algo != "nil":
        assert not np.allclose(base["outer/loss"], np.log(ways), atol=1e-3)
