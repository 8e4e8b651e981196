"""The feature-reuse studies on tiny Omniglot models trained for a few steps."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.analysis.adaptation_similarity import similarity_before_after
from metajax.analysis.compare import compare_runs
from metajax.analysis.rsa_study import classical_mds
from metajax.analysis.runs import TrainedRun
from metajax.analysis.weight_distance import weight_distance
from metajax.cli import main
from metajax.training.config import Config
from metajax.training.checkpoint import save_checkpoint
from metajax.training.loop import _Run, evaluate_run, train_and_evaluate

BODY = ["conv1", "conv2", "conv3", "conv4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, omniglot_data_dir):
    """Two run directories of a Conv4 with 8 filters, 3-way 1-shot Omniglot.

    ``maml``: first-order MAML (adapts the whole body, like MAML, and compiles in half the
    time) trained for 3 steps, a checkpoint after each. ``anil``: an ANIL run of another seed
    whose only checkpoint is its initialisation (written directly: compiling a second training
    step would double the time, and the studies only read checkpoints).
    """
    tiny = Config(dataset="omniglot", data_dir=str(omniglot_data_dir), hidden=8, ways=3, shots=1,
                  query=5, meta_batch=2, inner_steps=1, eval_inner_steps=2, inner_lr=0.4,
                  log_every=1, eval_every=100, eval_tasks=2, eval_batch=2, checkpoint_every=1,
                  keep_checkpoints=5, unroll=False)  # rolled inner loops compile faster
    root = tmp_path_factory.mktemp("runs")
    train_and_evaluate(tiny.replace(algo="fomaml", steps=3), root / "fomaml", progress=False)
    anil = tiny.replace(algo="anil", steps=1, seed=1)
    (root / "anil").mkdir()
    anil.save(root / "anil")
    save_checkpoint(root / "anil", _Run(anil).initial_state(), 1)
    # The freezing study scores one evaluation per frozen block: an MLP (2 body layers) on
    # sinusoids compiles in a fraction of a Conv4's time.
    train_and_evaluate(Config(steps=2, meta_batch=2, eval_tasks=2, eval_batch=2, log_every=1,
                              checkpoint_every=1), root / "sinusoid", progress=False)
    return {"maml": root / "fomaml", "anil": root / "anil", "sinusoid": root / "sinusoid"}


@pytest.fixture(scope="module")
def opened(runs):
    """The runs opened once, so that tests share their compiled functions."""
    return {name: TrainedRun(path, query=10) for name, path in runs.items()}


def _files(folder):
    return sorted((p.relative_to(folder), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_analyze_cli_writes_json_and_png_and_leaves_the_run_alone(runs, tmp_path):
    before = _files(runs["maml"])
    out = tmp_path / "out"
    rc = main(["analyze", str(runs["maml"]), "--out", str(out), "--similarity",
               "cca,rsa", "--weight-distance", "--rsa", "--rsa-inner-steps", "1,3",
               "--tasks", "4", "--chunk", "2", "--query", "10"])
    assert rc == 0
    assert _files(runs["maml"]) == before
    for name in ("similarity", "weight_distance", "rsa", "rsa_trajectories"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    similarity = json.loads((out / "similarity.json").read_text())
    assert [c["step"] for c in similarity["checkpoints"]] == [1, 2, 3]
    assert similarity["layers"] == BODY + ["head"]
    assert similarity["query_examples_per_task"] == 30  # 3 ways x 10 queries
    for entry in similarity["checkpoints"]:
        for metric, per_layer in entry["similarity"].items():
            for layer, stats in per_layer.items():
                assert stats["n"] == 4 and np.isfinite(stats["mean"]), (metric, layer)
                assert 0.0 <= stats["mean"] <= (2.0 if metric == "rsa" else 1.0 + 1e-5)
    rsa = json.loads((out / "rsa.json").read_text())
    assert [e["gap"] for e in rsa["to_previous_checkpoint"]] == [1, 1]
    labels = rsa["trajectories"]["labels"]
    assert len(labels) == 3 * (1 + 4 * 2)  # checkpoints x (start + 4 tasks x 2 step counts)
    assert sorted({label["inner_steps"] for label in labels}) == [0, 1, 3]
    matrix = np.asarray(rsa["trajectories"]["layers"]["conv1"]["matrix"])
    assert matrix.shape == (27, 27) and np.allclose(np.diag(matrix), 0, atol=1e-6)


def test_freeze_cli_scores_each_contiguous_block(runs, tmp_path):
    assert main(["analyze", str(runs["sinusoid"]), "--out", str(tmp_path), "--freeze",
                 "--tasks", "4"]) == 0
    freeze = json.loads((tmp_path / "freeze.json").read_text())
    assert [r["block"] for r in freeze["rows"]] == ["none", "1", "1,2"]
    assert [r["frozen"] for r in freeze["rows"]] == [[], ["body/dense1"], ["body/dense1", "body/dense2"]]
    mse = [r["mse"] for r in freeze["rows"]]
    assert all(np.isfinite(mse)) and len(set(mse)) == 3  # freezing changes the adapted model
    assert (tmp_path / "freeze.png").read_bytes()[:4] == b"\x89PNG"


def test_anil_adapts_only_the_head(opened):
    # ANIL's inner loop leaves the body unchanged: body representations before and after
    # adaptation are identical, its weights do not move, and the head's do.
    trained = opened["anil"]
    sims = similarity_before_after(trained, metrics=("cca", "cka", "rsa"), tasks=2, chunk=2)
    per_metric = sims["checkpoints"][0]["similarity"]
    for layer in BODY:
        assert per_metric["cca"][layer]["mean"] == pytest.approx(1.0, abs=1e-4)
        assert per_metric["cka"][layer]["mean"] == pytest.approx(1.0, abs=1e-5)
        assert per_metric["rsa"][layer]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert per_metric["cka"]["head"]["mean"] < 0.999
    distances = weight_distance(trained, tasks=2, chunk=2)["checkpoints"][0]["layers"]
    assert all(distances[layer]["distance"]["mean"] == 0.0 for layer in BODY)
    assert distances["head"]["distance"]["mean"] > 0


def test_zero_inner_steps_change_nothing_and_maml_moves_every_layer(opened):
    trained = opened["maml"]
    none = similarity_before_after(trained, metrics=("cca", "cka"), checkpoints="last",
                                   tasks=2, chunk=2, inner_steps=0)
    for per_layer in none["checkpoints"][0]["similarity"].values():
        # (1e-4: cca's regulariser, epsilon = 1e-6, shrinks low-variance channels a little.)
        assert all(s["mean"] == pytest.approx(1.0, abs=1e-4) for s in per_layer.values())
    moved = weight_distance(trained, checkpoints="last", tasks=2, chunk=2)["checkpoints"][0]["layers"]
    assert all(moved[layer]["distance"]["mean"] > 0 for layer in BODY + ["head"])


def test_weight_distance_matches_adapting_by_hand(opened):
    trained = opened["maml"]
    result = weight_distance(trained, checkpoints="2", tasks=2, chunk=2, inner_steps=2)
    meta = trained.meta_params(2)
    supports = trained.tasks(2)[0]
    by_hand = []
    for t in range(2):
        adapted = trained.learner.adapt(meta, jax.tree_util.tree_map(lambda a: a[t], supports), 2)
        moved = [adapted["body"]["conv2"][k] - meta["body"]["conv2"][k] for k in meta["body"]["conv2"]]
        by_hand.append(float(jnp.sqrt(sum(jnp.sum(d ** 2) for d in moved))))
    stats = result["checkpoints"][0]["layers"]["conv2"]["distance"]
    assert stats["mean"] == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert stats["std"] == pytest.approx(np.std(by_hand, ddof=1), rel=1e-3, abs=1e-9)


def test_compare_a_run_with_itself_is_identity_and_differs_from_another(runs, opened, tmp_path):
    maml = opened["maml"]
    same = compare_runs(maml, maml, metrics=("cca", "cka"), tasks=2, chunk=2)
    for per_layer in same["similarity"].values():
        assert all(s["mean"] == pytest.approx(1.0, abs=1e-4) for s in per_layer.values())
    rc = main(["compare", str(runs["maml"]), str(runs["anil"]), "--out", str(tmp_path),
               "--tasks", "2", "--chunk", "2", "--query", "10"])
    assert rc == 0 and (tmp_path / "compare.png").is_file()
    other = json.loads((tmp_path / "compare.json").read_text())
    assert other["algos"] == ["fomaml", "anil"]
    assert other["similarity"]["cka"]["head"]["mean"] < 0.99  # independently initialised heads


def test_cli_errors_are_clear(runs, tmp_path, capsys):
    assert main(["analyze", str(runs["anil"]), "--out", str(tmp_path), "--freeze"]) == 2
    err = capsys.readouterr().err
    assert "anil adapts a fixed part" in err and "factory takes mask=, e.g. maml, fomaml" in err
    assert main(["analyze", str(runs["maml"]), "--out", str(tmp_path)]) == 2
    assert "choose at least one study" in capsys.readouterr().err
    assert main(["analyze", str(runs["maml"]), "--out", str(tmp_path), "--similarity", "nope"]) == 2
    assert "unknown similarity metric(s) nope" in capsys.readouterr().err
    assert main(["analyze", str(runs["maml"]), "--out", str(tmp_path), "--weight-distance",
                 "--checkpoints", "7"]) == 2
    assert "holds checkpoints at steps 1, 2, 3" in capsys.readouterr().err


def test_classical_mds_recovers_planar_configurations():
    points = np.random.default_rng(0).normal(size=(7, 2))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords = classical_mds(d)
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), d, atol=1e-9)


def test_freeze_over_training_scores_each_checkpoint(runs, tmp_path):
    """analyze --freeze --checkpoints all: Raghu et al.'s Fig 2 right (freezing over training);
    each checkpoint's rows equal an eval of that checkpoint with those layers frozen."""
    assert main(["analyze", str(runs["sinusoid"]), "--out", str(tmp_path), "--freeze",
                 "--checkpoints", "all", "--tasks", "4"]) == 0
    freeze = json.loads((tmp_path / "freeze.json").read_text())
    assert [entry["step"] for entry in freeze["by_step"]] == [1, 2]
    assert freeze["rows"] == freeze["by_step"][-1]["rows"]
    older = evaluate_run(runs["sinusoid"], tasks=4, freeze=["1"], checkpoint=1)
    assert freeze["by_step"][0]["rows"][1]["mse"] == pytest.approx(older["mse"], rel=1e-6)
    assert freeze["by_step"][0]["rows"][1]["mse"] != freeze["by_step"][1]["rows"][1]["mse"]
    assert (tmp_path / "freeze.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_and_analyze_take_a_checkpoint(runs, tmp_path, capsys):
    assert main(["compare", str(runs["maml"]), str(runs["anil"]), "--out", str(tmp_path),
                 "--tasks", "2", "--chunk", "2", "--checkpoint", "2,1", "--similarity",
                 "cka"]) == 0
    assert json.loads((tmp_path / "compare.json").read_text())["checkpoint_steps"] == [2, 1]
    assert main(["compare", str(runs["maml"]), str(runs["anil"]), "--out", str(tmp_path),
                 "--checkpoint", "7"]) == 2
    assert "holds checkpoints at steps 1, 2, 3" in capsys.readouterr().err
    assert main(["analyze", str(runs["maml"]), "--out", str(tmp_path), "--weight-distance",
                 "--tasks", "2", "--chunk", "2", "--checkpoint", "2"]) == 0
    result = json.loads((tmp_path / "weight_distance.json").read_text())
    assert [entry["step"] for entry in result["checkpoints"]] == [2]
