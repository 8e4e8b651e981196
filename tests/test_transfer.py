"""--init-from RUN --train head: another run's body, frozen in both loops, and a new head."""
import numpy as np
import pytest
from flax import serialization

from metajax.cli import main
from metajax.training.checkpoint import list_checkpoints
from metajax.training.config import Config
from metajax.training.loop import evaluate_run, train_and_evaluate

SMALL = dict(steps=4, meta_batch=2, log_every=2, eval_every=4, checkpoint_every=2, eval_tasks=4,
             eval_batch=4, eval_inner_steps=2)


def _params(path):
    return serialization.msgpack_restore(path.read_bytes())["params"]


@pytest.fixture(scope="module")
def source(omniglot_data_dir, tmp_path_factory):
    """A 5-way Omniglot run whose body the head-only runs start from."""
    cfg = Config(dataset="omniglot", data_dir=str(omniglot_data_dir), ways=5, shots=1, query=1,
                 hidden=8, **SMALL)
    workdir = tmp_path_factory.mktemp("transfer") / "source"
    train_and_evaluate(cfg, workdir, progress=False)
    return cfg, workdir


@pytest.mark.parametrize("algo", ["maml", "anil", "metasgd"])
def test_head_only_runs_keep_the_source_body_bit_for_bit(source, algo, tmp_path):
    cfg, workdir = source
    run = tmp_path / "head"
    train_and_evaluate(cfg.replace(algo=algo, ways=3, init_from=str(workdir), train="head"),
                       run, progress=False)
    body = _params(workdir / "checkpoints" / "step_00000004.msgpack")["body"]
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]
    for _, path in list_checkpoints(run):
        params = _params(path)
        params = params["params"] if algo == "metasgd" else params
        for layer, leaves in body.items():
            for name, value in leaves.items():
                assert np.array_equal(params["body"][layer][name], value), (layer, name)
        assert params["head"]["kernel"].shape[-1] == 3  # a new 3-way head
    first = _params(list_checkpoints(run)[0][1])
    first = first["params"] if algo == "metasgd" else first
    last = _params(list_checkpoints(run)[-1][1])
    last = last["params"] if algo == "metasgd" else last
    assert not np.array_equal(first["head"]["kernel"], last["head"]["kernel"])  # the head trains
    assert 0.0 <= evaluate_run(run, tasks=4)["accuracy"] <= 1.0


def test_init_from_a_checkpoint_file_takes_that_step(source, tmp_path):
    cfg, workdir = source
    run = tmp_path / "head"
    train_and_evaluate(cfg.replace(steps=2, init_from=str(workdir / "checkpoints" /
                                                          "step_00000002.msgpack"),
                                   train="head"), run, progress=False)
    older = _params(workdir / "checkpoints" / "step_00000002.msgpack")["body"]
    assert np.array_equal(_params(list_checkpoints(run)[-1][1])["body"]["conv1"]["kernel"],
                          older["conv1"]["kernel"])


def test_random_features_train_only_the_head(source, tmp_path):
    from metajax.training.loop import _Run

    cfg, _ = source
    random_run = tmp_path / "random"
    random_cfg = cfg.replace(steps=2, init_from="random", train="head")
    train_and_evaluate(random_cfg, random_run, progress=False)
    initial = _Run(random_cfg).initial_state().params  # the seed's random init
    trained = _params(random_run / "checkpoints" / "step_00000002.msgpack")
    for layer, leaves in trained["body"].items():
        for name, value in leaves.items():
            assert np.array_equal(np.asarray(initial["body"][layer][name]), value), (layer, name)
    assert not np.array_equal(np.asarray(initial["head"]["kernel"]), trained["head"]["kernel"])


def test_init_from_a_different_body_is_refused(source, tmp_path):
    cfg, workdir = source
    with pytest.raises(ValueError, match=r"--init-from .*body differs.*conv1/kernel"):
        train_and_evaluate(cfg.replace(hidden=16, init_from=str(workdir), train="head"),
                           tmp_path / "run", progress=False)


@pytest.mark.parametrize("flags, message", [
    (["--algo", "protonets", "--train", "head", "--init-from", "random"],
     "--train head needs an algorithm whose inner loop can be limited to the head"),
    (["--init-from", "/nonexistent/run", "--train", "head"], "not a metajax run folder"),
    (["--train", "body"], "unknown --train 'body'"),
])
def test_bad_transfer_flags_are_refused(flags, message, tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path / "run"), "--steps", "1", *flags]) == 2
    assert message in capsys.readouterr().err


def test_adam_b2_reaches_the_outer_optimiser():
    import jax.numpy as jnp
    import optax

    from metajax.training.loop import _outer_optimizer

    params = {"w": jnp.ones(3)}
    grads = [{"w": jnp.array([0.5, -1.0, 2.0])}, {"w": jnp.array([1.0, 0.1, -0.3])}]

    def run(optimizer):
        state = optimizer.init(params)
        for g in grads:
            updates, state = optimizer.update(g, state, params)
        return updates["w"]

    ours = run(_outer_optimizer(Config(meta_lr=1e-3, adam_b2=0.99)))
    np.testing.assert_array_equal(ours, run(optax.adam(1e-3, b2=0.99)))
    assert not np.array_equal(ours, run(optax.adam(1e-3)))
    with pytest.raises(ValueError, match="--adam-b2 must be in"):
        Config(adam_b2=1.0).validate()


def test_seeds_start_from_the_same_seeds_bodies(omniglot_data_dir, tmp_path):
    """--seeds 0,1 --init-from A_SEEDS_RUN: seed s trains a head on A_SEEDS_RUN/seed_s's body."""
    cfg = Config(dataset="omniglot", data_dir=str(omniglot_data_dir), ways=3, shots=1, query=1,
                 hidden=8, seeds=(0, 1), **{**SMALL, "steps": 2})
    train_and_evaluate(cfg, tmp_path / "source", progress=False)
    train_and_evaluate(cfg.replace(init_from=str(tmp_path / "source"), train="head"),
                       tmp_path / "head", progress=False)
    bodies = [_params(list_checkpoints(tmp_path / "source" / f"seed_{s}")[-1][1])["body"]
              for s in (0, 1)]
    assert not np.array_equal(bodies[0]["conv1"]["kernel"], bodies[1]["conv1"]["kernel"])
    for s, body in zip((0, 1), bodies):
        mine = _params(list_checkpoints(tmp_path / "head" / f"seed_{s}")[-1][1])["body"]
        for layer, leaves in body.items():
            for name, value in leaves.items():
                assert np.array_equal(mine[layer][name], value), (s, layer, name)
