"""Raghu et al. Table 5's bodies: multiclass pretraining, multitask training, and the reference
batch-norm options (offset only, not adapted in the inner loop)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import serialization

from metajax.algorithms import classification, get_factory, make_algorithm, multiclass
from metajax.algorithms.registry import algorithm_name
from metajax.core import batch_norm_mask
from metajax.data import DataError, sample_class_batch
from metajax.models import Conv4, as_model
from metajax.training.checkpoint import list_checkpoints
from metajax.training.config import Config
from metajax.training.loop import _Run, evaluate_run, train_and_evaluate

SMALL = dict(steps=4, meta_batch=1, log_every=2, eval_every=4, checkpoint_every=2, eval_tasks=4,
             eval_batch=4, eval_inner_steps=2, ways=5, shots=1, query=1, hidden=8)


def _params(path):
    return serialization.msgpack_restore(path.read_bytes())["params"]


def test_class_batches_are_labelled_by_class_and_drawn_without_replacement():
    classes, examples = 7, 3
    images = np.arange(classes * examples, dtype=np.float32).reshape(classes, examples, 1, 1, 1)
    (x, y), (xq, yq) = sample_class_batch(jax.random.PRNGKey(0), images, batch_size=21)
    flat = np.asarray(x).reshape(-1).astype(int)
    assert sorted(flat) == list(range(21))            # every image once: no replacement
    np.testing.assert_array_equal(np.asarray(y), flat // examples)  # labelled by its class
    assert y.dtype == jnp.int32 and np.array_equal(x, xq) and np.array_equal(y, yq)
    uint8 = np.full((2, 2, 1, 1, 1), 255, np.uint8)
    assert float(sample_class_batch(jax.random.PRNGKey(1), uint8, batch_size=2)[0][0].max()) == 1.0
    with pytest.raises(DataError, match=r"--batch-size 22 must be between 1 and the 21 images"):
        sample_class_batch(jax.random.PRNGKey(0), images, batch_size=22)


def test_multiclass_gradient_is_the_supervised_cross_entropy_gradient():
    model = as_model(Conv4(6, hidden=4))
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 12, 12, 1))
    y = jnp.arange(8) % 6
    params, _ = model.init(jax.random.PRNGKey(1), x)
    learner = multiclass(model, classification(), inner_lr=0.1, ways=3)
    grads, metrics, _ = learner.task_grad(params, ((x, y), (x, y)))
    expected = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply(p, x)[0], y).mean())(params)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert set(metrics) >= {"outer/loss", "outer/acc"}


def test_multiclass_test_head_equals_a_fresh_n_way_head_fitted_alone():
    """Fitting the first N outputs of the C-way head == fitting an N-way zero head."""
    wide, narrow = as_model(Conv4(6, hidden=4)), as_model(Conv4(3, hidden=4))
    xs = jax.random.uniform(jax.random.PRNGKey(0), (3, 12, 12, 1))
    xq = jax.random.uniform(jax.random.PRNGKey(2), (6, 12, 12, 1))
    ys, yq = jnp.arange(3), jnp.arange(6) % 3
    params, _ = wide.init(jax.random.PRNGKey(1), xs)
    task = ((xs, ys), (xq, yq))
    got = multiclass(wide, classification(), inner_lr=0.5, ways=3).evaluate(params, task, 3)
    small, _ = narrow.init(jax.random.PRNGKey(1), xs)
    small = narrow.replace_head(params, jax.tree_util.tree_map(jnp.zeros_like,
                                                               narrow.head_params(small)))
    anil = make_algorithm("anil", narrow, classification(), inner_lr=0.5, inner_steps=3)
    want = anil.evaluate(small, task, 3)
    for name in ("outer/loss", "outer/acc"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5)


def test_multitask_is_the_name_and_pretrain_an_alias():
    assert get_factory("pretrain") is get_factory("multitask")
    assert algorithm_name(get_factory("pretrain")) == "multitask"


def test_multiclass_run_trains_every_class_and_its_body_starts_a_head_run(omniglot_data_dir,
                                                                           tmp_path):
    cfg = Config(algo="multiclass", dataset="omniglot", data_dir=str(omniglot_data_dir),
                 batch_size=16, **SMALL)
    source = tmp_path / "multiclass"
    train_and_evaluate(cfg, source, progress=False)
    params = _params(list_checkpoints(source)[-1][1])
    num_train = np.shape(_Run(cfg).source.splits["train"])[0]
    assert params["head"]["kernel"].shape[-1] == num_train  # one output per training class
    result = evaluate_run(source, tasks=4)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert 0.0 <= evaluate_run(source, tasks=4, head="nil")["accuracy"] <= 1.0
    head_run = tmp_path / "head"
    train_and_evaluate(cfg.replace(algo="maml", meta_batch=2, init_from=str(source),
                                   train="head"), head_run, progress=False)
    for layer, leaves in params["body"].items():
        for name, value in leaves.items():
            assert np.array_equal(_params(list_checkpoints(head_run)[-1][1])["body"][layer][name],
                                  value)


def test_multiclass_refuses_what_it_cannot_train(omniglot_data_dir, tmp_path):
    with pytest.raises(ValueError, match="choose an image --dataset"):
        _Run(Config(algo="multiclass"))
    cfg = Config(algo="multiclass", dataset="omniglot", data_dir=str(omniglot_data_dir),
                 batch_size=10 ** 7, **SMALL)
    with pytest.raises(DataError, match=r"--batch-size 10000000 must be between 1 and the"):
        _Run(cfg)
    with pytest.raises(ValueError, match="--train head needs an algorithm"):
        Config(algo="multiclass", train="head").validate()


def test_offset_only_batch_norm_has_no_scale_and_adapt_bn_false_keeps_bn_out_of_the_inner_loop():
    model = as_model(Conv4(3, hidden=4, bn="offset-only"))
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 12, 12, 1))
    params, _ = model.init(jax.random.PRNGKey(1), x)
    assert set(params["body"]["conv1"]) == {"kernel", "bias", "offset"}
    mask = batch_norm_mask(params)
    assert not mask["body"]["conv2"]["offset"] and mask["body"]["conv2"]["kernel"]
    assert mask["head"]["kernel"]
    task = ((x, jnp.arange(3)), (x, jnp.arange(3)))
    learner = make_algorithm("maml", model, classification(), inner_lr=0.5, inner_steps=1,
                             mask=batch_norm_mask)
    adapted = learner.adapt(params, task[0], 2)
    assert np.array_equal(adapted["body"]["conv3"]["offset"], params["body"]["conv3"]["offset"])
    assert not np.array_equal(adapted["body"]["conv3"]["kernel"], params["body"]["conv3"]["kernel"])


def test_bn_options_from_the_config(omniglot_data_dir, tmp_path):
    cfg = Config(dataset="omniglot", data_dir=str(omniglot_data_dir), bn="offset-only",
                 adapt_bn=False, **{**SMALL, "meta_batch": 2, "steps": 2})
    train_and_evaluate(cfg, tmp_path / "run", progress=False)
    assert "scale" not in _params(list_checkpoints(tmp_path / "run")[-1][1])["body"]["conv4"]
    with pytest.raises(ValueError, match="unknown --bn 'none'"):
        Config(bn="none").validate()
    with pytest.raises(ValueError, match="--adapt-bn false needs an algorithm"):
        Config(algo="protonets", adapt_bn=False).validate()
    with pytest.raises(ValueError, match="--bn offset-only is an option of the conv4 models"):
        _Run(Config(bn="offset-only"))
