"""The feature-reuse studies on a user's own Flax module: no "body"/"head" params, no
``return_activations``, stock batch norm (model state in the checkpoints) and dropout."""
import flax.linen as nn
import numpy as np
import pytest

import metajax
from metajax.analysis import adaptation_similarity
from metajax.analysis.adaptation_similarity import similarity_before_after
from metajax.analysis.compare import compare_runs
from metajax.analysis.freezing import freeze_study
from metajax.analysis.representations import activations
from metajax.analysis.rsa_study import rsa_study
from metajax.analysis.runs import TrainedRun
from metajax.analysis.weight_distance import weight_distance
from metajax.training.checkpoint import save_checkpoint
from metajax.training.config import Config
from metajax.training.loop import _Run

WAYS = 3
LAYERS = ["Conv_0", "BatchNorm_0", "Dense_0", "head"]  # call order, not alphabetical


class UserNet(nn.Module):
    """Conv -> BatchNorm -> relu -> Dropout -> mean-pool -> Dense -> Dense (the head)."""

    ways: int

    @nn.compact
    def __call__(self, x):
        # No train flag: metajax sets batch norm's and dropout's mode per call.
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(nn.BatchNorm()(x))
        x = nn.Dropout(0.2)(x)
        x = nn.Dense(8)(x.mean(axis=(1, 2)))
        return nn.Dense(self.ways)(x)


def _splits():
    rng = np.random.default_rng(0)
    return {name: rng.integers(0, 256, size=(classes, 4, 8, 8, 1), dtype=np.uint8)
            for name, classes in (("train", 6), ("val", 4), ("test", 4))}


@pytest.fixture(scope="module")
def user_runs(tmp_path_factory):
    """A MAML run of ``UserNet`` trained for 2 steps (a checkpoint after each; batch norm with
    running averages at evaluation, so the checkpoints' model state matters), and an ANIL run
    whose only checkpoint is its initialisation."""
    data = _splits()
    cfg = Config(dataset="omniglot", ways=WAYS, shots=1, query=2, meta_batch=2, steps=2,
                 inner_steps=1, eval_inner_steps=1, inner_lr=0.4, eval_every=2,
                 checkpoint_every=1, keep_checkpoints=5, eval_tasks=4, eval_batch=2,
                 log_every=1, unroll=False, eval_bn="running")
    root = tmp_path_factory.mktemp("user")
    metajax.train_and_evaluate(cfg, root / "maml", model=UserNet(WAYS), data=data,
                               progress=False)
    anil = cfg.replace(algo="anil", steps=1, seed=1)
    (root / "anil").mkdir()
    anil.save(root / "anil")
    save_checkpoint(root / "anil", _Run(anil, model=UserNet(WAYS), data=data).initial_state(), 1)
    opened = {name: TrainedRun(root / name, model=UserNet(WAYS), data=data)
              for name in ("maml", "anil")}
    return opened


def test_checkpoints_hold_the_model_state_and_activations_use_it(user_runs):
    trained = user_runs["maml"]
    assert trained.steps == [1, 2]
    state, initial = trained.model_state(2), trained.initial_model_state()
    assert set(state["batch_stats"]) == {"BatchNorm_0"}
    params = trained.model_params(trained.meta_params(2))
    x = trained.tasks(1)[1][0][0]
    trained_acts = activations(trained.model, params, x, state)
    assert list(trained_acts) == LAYERS
    initial_acts = activations(trained.model, params, x, initial)
    # eval_bn="running": the running averages meta-training moved change the representation.
    assert not np.array_equal(trained_acts["BatchNorm_0"], initial_acts["BatchNorm_0"])


def test_weight_distance_has_one_entry_per_layer(user_runs):
    result = weight_distance(user_runs["maml"], checkpoints="last", tasks=2, chunk=2)
    assert result["layers"] == LAYERS
    moved = result["checkpoints"][0]["layers"]
    assert all(np.isfinite(moved[name]["distance"]["mean"]) for name in LAYERS)
    assert all(moved[name]["distance"]["mean"] > 0 for name in LAYERS)  # MAML adapts them all


def test_similarity_before_after_adaptation_compiles_once_for_all_checkpoints(user_runs):
    trained = user_runs["maml"]
    result = similarity_before_after(trained, metrics=("cka", "rsa"), tasks=2, chunk=2)
    assert result["layers"] == LAYERS
    assert [entry["step"] for entry in result["checkpoints"]] == [1, 2]
    for entry in result["checkpoints"]:
        for per_layer in entry["similarity"].values():
            assert list(per_layer) == LAYERS
            assert all(np.isfinite(s["mean"]) for s in per_layer.values())
    # The checkpoint's model state is an argument of the jitted function, not a constant.
    jitted = adaptation_similarity._before_after_jit(trained.model, trained.learner, 1)
    assert jitted._cache_size() == 1


def test_rsa_and_compare_run_on_the_user_model(user_runs):
    trained = user_runs["maml"]
    rsa = rsa_study(trained, checkpoints="last", tasks=2, chunk=2, adaptation_tasks=2,
                    inner_steps=(1,))
    assert rsa["layers"] == LAYERS
    assert all(np.isfinite(s["mean"]) for s in rsa["to_random_init"][0]["layers"].values())
    same = compare_runs(trained, trained, metrics=("cka",), tasks=2, chunk=2)
    assert same["layers"] == LAYERS
    cka = same["similarity"]["cka"]
    assert all(s["mean"] == pytest.approx(1.0, abs=1e-5) for s in cka.values())


def test_anil_adapts_only_the_users_head(user_runs):
    sims = similarity_before_after(user_runs["anil"], metrics=("cka",), tasks=2, chunk=2)
    per_layer = sims["checkpoints"][0]["similarity"]["cka"]
    assert all(per_layer[name]["mean"] == pytest.approx(1.0, abs=1e-5) for name in LAYERS[:-1])


def test_freezing_study_on_the_user_model(user_runs):
    result = freeze_study(user_runs["maml"], tasks=2)
    assert [r["block"] for r in result["rows"]] == ["none", "1", "1,2", "1,2,3"]
    assert [r["frozen"] for r in result["rows"]][-1] == ["Conv_0", "BatchNorm_0", "Dense_0"]
    assert all(np.isfinite(r["accuracy"]) for r in result["rows"])
    with pytest.raises(ValueError, match=r"anil adapts a fixed part .*ANIL the head only.*"
                                         r"factory takes mask=, e\.g\. maml, fomaml"):
        freeze_study(user_runs["anil"], tasks=2)
