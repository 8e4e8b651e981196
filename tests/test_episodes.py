"""Episode sampling: shapes, labels, without-replacement draws, jit/vmap and spec errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.data import DataError, Episode, check_episode_spec, sample_episode

NUM_CLASSES, NUM_EXAMPLES = 12, 10
WAYS, SHOTS, QUERIES = 5, 3, 4


def _id_images(num_classes=NUM_CLASSES, num_examples=NUM_EXAMPLES) -> np.ndarray:
    """uint8 (C, E, 2, 3, 1) whose pixels encode which (class, example) they are."""
    images = np.full((num_classes, num_examples, 2, 3, 1), 7, dtype=np.uint8)
    images[:, :, 0, 0, 0] = np.arange(num_classes)[:, None]
    images[:, :, 0, 1, 0] = np.arange(num_examples)[None, :]
    return images


def _decode(x) -> tuple[np.ndarray, np.ndarray]:
    """(..., 2, 3, 1) floats in [0, 1] -> (class ids, example ids)."""
    pixels = np.rint(np.asarray(x) * 255).astype(np.int64)
    return pixels[..., 0, 0, 0], pixels[..., 0, 1, 0]


def _sample(key, images=None, ways=WAYS, shots=SHOTS, queries=QUERIES):
    images = _id_images() if images is None else images
    return sample_episode(key, images, ways=ways, shots=shots, queries=queries)


# Compiling on CPU costs about a second per distinct function, so the tests share these two.
_jit_sample = jax.jit(functools.partial(sample_episode, ways=WAYS, shots=SHOTS, queries=QUERIES))
_jit_vmap_sample = jax.jit(jax.vmap(_jit_sample, in_axes=(0, None)))
_KEYS = jax.random.split(jax.random.key(42), 200)


@pytest.fixture(scope="module")
def many_episodes():
    """200 episodes drawn with jit(vmap(sample_episode)), as numpy."""
    return jax.tree.map(np.asarray, _jit_vmap_sample(_KEYS, jnp.asarray(_id_images())))


def test_shapes_and_dtypes():
    episode = _jit_sample(jax.random.key(0), jnp.asarray(_id_images()))
    assert isinstance(episode, Episode)
    (sx, sy), (qx, qy) = episode
    assert sx.shape == (WAYS * SHOTS, 2, 3, 1) and sx.dtype == jnp.float32
    assert qx.shape == (WAYS * QUERIES, 2, 3, 1) and qx.dtype == jnp.float32
    assert sy.shape == (WAYS * SHOTS,) and sy.dtype == jnp.int32
    assert qy.shape == (WAYS * QUERIES,) and qy.dtype == jnp.int32
    assert float(sx.min()) >= 0.0 and float(sx.max()) <= 1.0
    # The filler pixel value 7 is scaled by 1/255.
    np.testing.assert_allclose(np.asarray(sx)[:, 1, 2, 0], 7 / 255, rtol=1e-6)


def test_label_counts(many_episodes):
    (_, sy), (_, qy) = many_episodes
    for labels, per_class in ((sy, SHOTS), (qy, QUERIES)):
        assert labels.min() >= 0 and labels.max() < WAYS
        counts = np.stack([(labels == c).sum(axis=1) for c in range(WAYS)], axis=1)
        assert (counts == per_class).all()


def test_each_label_is_one_class_and_classes_are_distinct(many_episodes):
    (sx, sy), (qx, qy) = many_episodes
    s_class, _ = _decode(sx)
    q_class, _ = _decode(qx)
    for t in range(len(sy)):
        label_to_class = {}
        for cls, label in zip(np.concatenate([s_class[t], q_class[t]]),
                              np.concatenate([sy[t], qy[t]])):
            assert label_to_class.setdefault(int(label), int(cls)) == int(cls)
        assert len(label_to_class) == WAYS
        # Never the same class under two labels.
        assert len(set(label_to_class.values())) == WAYS


def test_examples_are_distinct_and_support_query_disjoint(many_episodes):
    (sx, sy), (qx, qy) = many_episodes
    s_class, s_example = _decode(sx)
    q_class, q_example = _decode(qx)
    for t in range(len(sy)):
        for label in range(WAYS):
            support = set(s_example[t][sy[t] == label].tolist())
            query = set(q_example[t][qy[t] == label].tolist())
            assert len(support) == SHOTS and len(query) == QUERIES
            assert not support & query
    # Every example index gets drawn somewhere: the draw covers all E examples.
    assert set(np.concatenate([s_example.ravel(), q_example.ravel()]).tolist()) == set(
        range(NUM_EXAMPLES))


def test_labels_are_permuted_across_tasks(many_episodes):
    (sx, sy), _ = many_episodes
    s_class, _ = _decode(sx)
    class_of_label0 = s_class[:, 0]  # label 0 occupies the first support rows
    assert (sy[:, 0] == 0).all()
    # 200 uniform draws from 12 classes miss one with probability ~ 12 * (11/12)**200 < 1e-6.
    assert set(class_of_label0.tolist()) == set(range(NUM_CLASSES))
    # The chosen classes are not handed out in sorted order.
    per_label = s_class[:, ::SHOTS]
    assert (np.diff(per_label, axis=1) < 0).any(axis=1).mean() > 0.5


def test_jit_matches_eager():
    images = jnp.asarray(_id_images())
    key = jax.random.key(3)
    eager = sample_episode(key, images, ways=WAYS, shots=SHOTS, queries=QUERIES)
    jitted = _jit_sample(key, images)
    assert isinstance(jitted, Episode)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_vmap_matches_loop(many_episodes):
    images = jnp.asarray(_id_images())
    for i in (0, 1, 2, 199):
        single = _jit_sample(_KEYS[i], images)
        for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(many_episodes)):
            np.testing.assert_array_equal(np.asarray(a), b[i])


def test_different_keys_give_different_tasks():
    images = jnp.asarray(_id_images())
    a = _jit_sample(jax.random.key(0), images)
    b = _jit_sample(jax.random.key(1), images)
    assert not np.array_equal(np.asarray(a.support[0]), np.asarray(b.support[0]))


def test_float_images_pass_through():
    images = np.random.default_rng(0).random((4, 6, 3, 3, 2)).astype(np.float64)
    (sx, _), (qx, _) = sample_episode(jax.random.key(0), images, ways=4, shots=2, queries=4)
    assert sx.dtype == jnp.float32
    # Every drawn example is one of the inputs, unscaled.
    flat = images.reshape(-1, 3, 3, 2).astype(np.float32)
    for x in np.concatenate([np.asarray(sx), np.asarray(qx)]):
        assert np.isclose(flat, x).all(axis=(1, 2, 3)).any()


def test_real_omniglot_episode(omniglot_splits):
    train = jnp.asarray(omniglot_splits.train)
    (sx, sy), (qx, qy) = jax.jit(functools.partial(
        sample_episode, ways=5, shots=1, queries=15))(jax.random.key(0), train)
    assert sx.shape == (5, 28, 28, 1) and qx.shape == (75, 28, 28, 1)
    assert 0.0 <= float(sx.min()) and float(sx.max()) <= 1.0 and float(sx.max()) > 0.5
    assert sorted(np.asarray(sy).tolist()) == list(range(5))


# --- spec errors ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ways, shots, queries, match",
    [
        (13, 1, 1, r"--ways 13 is larger than the 12 classes in the train split; use --ways <= 12"),
        (1, 1, 1, r"--ways 1 .*use --ways >= 2"),
        (5, 0, 1, r"--shots 0 .*use --shots >= 1"),
        (5, 1, 0, r"--query 0 .*use --query >= 1"),
        (5, 6, 5, r"11, more than the 10 examples per class in the train split"),
    ],
)
def test_check_episode_spec_errors(ways, shots, queries, match):
    with pytest.raises(DataError, match=match):
        check_episode_spec(NUM_CLASSES, NUM_EXAMPLES, ways=ways, shots=shots, queries=queries)


def test_check_episode_spec_accepts_limits():
    check_episode_spec(NUM_CLASSES, NUM_EXAMPLES, ways=NUM_CLASSES, shots=5, queries=5)
    check_episode_spec(2, 2, ways=2, shots=1, queries=1, split="val")


def test_split_name_in_message():
    with pytest.raises(DataError, match="in the val split"):
        check_episode_spec(5, 20, ways=20, shots=1, queries=1, split="val")


@pytest.mark.parametrize("ways, shots, queries", [(13, 1, 1), (5, 0, 1), (5, 1, 0), (5, 6, 5)])
def test_sample_episode_errors_even_under_jit(ways, shots, queries):
    images = jnp.asarray(_id_images())
    with pytest.raises(DataError):
        _sample(jax.random.key(0), images, ways, shots, queries)
    jitted = jax.jit(functools.partial(sample_episode, ways=ways, shots=shots, queries=queries))
    with pytest.raises(DataError):
        jitted(jax.random.key(0), images)


def test_traced_ways_is_rejected():
    images = jnp.asarray(_id_images())
    with pytest.raises(DataError, match="concrete integer"):
        jax.jit(lambda key, w: sample_episode(key, images, ways=w, shots=1, queries=1))(
            jax.random.key(0), 5)


def test_bad_images_rejected():
    with pytest.raises(DataError, match="uint8"):
        _sample(jax.random.key(0), _id_images().astype(np.int32))
    with pytest.raises(DataError, match="classes, examples"):
        _sample(jax.random.key(0), np.zeros((12, 10), np.uint8))
