"""Similarity metrics: slow float64 numpy references, invariances, identities, exact values, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import pdist

from metajax.similarity import (cca, cca_coefficients, linear_cka, pwcca, rbf_cka, rsa, rsa_matrix,
                                 svcca)

# ---------------------------------------------------------------------------------------------
# Slow float64 numpy implementations of the same formulas, written from the papers' definitions
# (covariance matrices, explicit Gram matrices, scipy ranks) rather than from metajax's algebra.


def _c(a):
    return a - a.mean(0)


def _inv_sqrt(s):
    w, v = np.linalg.eigh(s)
    return v @ np.diag(w ** -0.5) @ v.T


def np_cca_coefficients(x, y):
    p1 = x.shape[1]
    cov = np.cov(x.T, y.T)
    m = _inv_sqrt(cov[:p1, :p1]) @ cov[:p1, p1:] @ _inv_sqrt(cov[p1:, p1:])
    return np.linalg.svd(m, compute_uv=False)


def np_svcca(x, y, keep):
    reduced = []
    for a in (x, y):
        u, s, _ = np.linalg.svd(_c(a), full_matrices=False)
        k = next(k for k in range(1, len(s) + 1) if np.sum(s[:k] ** 2) >= keep * np.sum(s ** 2))
        reduced.append(u[:, :k] * s[:k])
    return np.mean(np_cca_coefficients(*reduced))


def np_pwcca(x, y):
    """google/svcca pwcca.py's definition on centred (neurons, datapoints) arrays.

    The reference's p1 > p2 branch crashes; its intent (weight the smaller side) is a swap.
    """
    x, y = _c(x), _c(y)
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    acts1, acts2 = x.T, y.T
    p1 = acts1.shape[0]
    cov = np.cov(acts1, acts2)
    m = _inv_sqrt(cov[:p1, :p1]) @ cov[:p1, p1:] @ _inv_sqrt(cov[p1:, p1:])
    u, s, _ = np.linalg.svd(m)
    dirns = u.T @ acts1
    q, _ = np.linalg.qr(dirns.T)
    weights = np.sum(np.abs(q.T @ acts1.T), axis=1)
    weights = weights / weights.sum()
    return np.sum(weights * s)


def np_center_gram(k, unbiased):
    n = k.shape[0]
    if not unbiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return h @ k @ h
    k = k.copy()
    np.fill_diagonal(k, 0)
    means = k.sum(0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    k -= means[:, None] + means[None, :]
    np.fill_diagonal(k, 0)
    return k


def np_cka(kx, ky, debiased):
    kx, ky = np_center_gram(kx, debiased), np_center_gram(ky, debiased)
    return np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))


def np_rbf_gram(a, threshold):
    d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))


def np_rsa(x, y, metric):
    dx, dy = pdist(x, metric), pdist(y, metric)
    rx, ry = stats.rankdata(dx), stats.rankdata(dy)
    return 1 - np.corrcoef(rx, ry)[0, 1]


REFERENCES = {
    "cca": (cca, lambda x, y: np.mean(np_cca_coefficients(x, y))),
    "svcca": (svcca, functools.partial(np_svcca, keep=0.99)),
    "svcca_keep_0.5": (functools.partial(svcca, keep=0.5), functools.partial(np_svcca, keep=0.5)),
    "pwcca": (pwcca, np_pwcca),
    "linear_cka": (linear_cka, lambda x, y: np_cka(x @ x.T, y @ y.T, False)),
    "linear_cka_debiased": (functools.partial(linear_cka, debiased=True),
                            lambda x, y: np_cka(x @ x.T, y @ y.T, True)),
    "rbf_cka": (rbf_cka, lambda x, y: np_cka(np_rbf_gram(x, 1.0), np_rbf_gram(y, 1.0), False)),
    "rbf_cka_debiased_t0.5": (
        functools.partial(rbf_cka, threshold=0.5, debiased=True),
        lambda x, y: np_cka(np_rbf_gram(x, 0.5), np_rbf_gram(y, 0.5), True)),
    "rsa_euclidean": (rsa, functools.partial(np_rsa, metric="euclidean")),
    "rsa_correlation": (functools.partial(rsa, metric="correlation"),
                        functools.partial(np_rsa, metric="correlation")),
}


def _pair(seed, n=80, p1=12, p2=7, dtype=np.float64):
    """Correlated representations with a non-zero mean and unequal column scales."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5))
    x = z @ rng.normal(size=(5, p1)) + 0.7 * rng.normal(size=(n, p1)) + 3.0
    y = np.tanh(z @ rng.normal(size=(5, p2))) + 0.3 * rng.normal(size=(n, p2)) * np.arange(1, p2 + 1)
    return x.astype(dtype), y.astype(dtype)


def _orthogonal(seed, p):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(p, p)))[0]


# ---------------------------------------------------------------------------------------------
# Agreement with the references


# Tests share the shapes (80, 12) x (80, 7) where they can, so that compilations are reused.
BASE = ["cca", "svcca", "pwcca", "linear_cka", "rbf_cka", "rsa_euclidean"]


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_numpy_float64(name):
    ours, reference = REFERENCES[name]
    x, y = _pair(1)
    with jax.enable_x64(True):
        got = ours(x, y)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(float(got), reference(x, y), rtol=1e-9, atol=1e-12)


def test_pwcca_weights_the_narrower_input_where_the_reference_crashes():
    # p1 < p2 is the reference's working branch; p1 > p2 is where it indexes acts1 with acts2's
    # mask and fails; we weight the narrower side there as well.
    x, y = _pair(1)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(pwcca(y, x)), np_pwcca(y, x), rtol=1e-9)
        np.testing.assert_allclose(float(pwcca(x, y)), float(pwcca(y, x)), rtol=1e-10)


def test_cca_coefficients_match_numpy_and_are_sorted():
    x, y = _pair(2)
    with jax.enable_x64(True):
        got = np.asarray(cca_coefficients(x, y))
    np.testing.assert_allclose(got, np_cca_coefficients(x, y), rtol=1e-9, atol=1e-12)
    assert got.shape == (7,) and np.all(np.diff(got) <= 0) and 0 < got[-1] < got[0] < 1


@pytest.mark.parametrize("name", BASE)
def test_float32_is_float32_and_close_to_float64(name):
    ours, _ = REFERENCES[name]
    x, y = _pair(3)
    got32 = ours(x.astype(np.float32), y.astype(np.float32))
    assert got32.dtype == jnp.float32
    with jax.enable_x64(True):
        got64 = float(ours(x, y))
    np.testing.assert_allclose(float(got32), got64, rtol=2e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------
# Identities, symmetry, invariances


@pytest.mark.parametrize("name", BASE)
def test_identical_inputs(name):
    ours, _ = REFERENCES[name]
    x, _ = _pair(4, dtype=np.float32)
    expected = 0.0 if name.startswith("rsa") else 1.0
    np.testing.assert_allclose(float(ours(x, x)), expected, atol=2e-5)


@pytest.mark.parametrize("name", BASE)
def test_symmetric(name):
    # pwcca is symmetric only because p1 != p2 here (it weights the narrower input).
    ours, _ = REFERENCES[name]
    x, y = _pair(5)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(ours(x, y)), float(ours(y, x)), rtol=1e-10)


@pytest.mark.parametrize("name", ["cca", "svcca", "linear_cka", "linear_cka_debiased", "rbf_cka",
                                  "rsa_euclidean"])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(name):
    ours, _ = REFERENCES[name]
    x, y = _pair(6)
    with jax.enable_x64(True):
        base = float(ours(x, y))
        moved = float(ours(2.5 * x @ _orthogonal(0, x.shape[1]), y @ _orthogonal(1, y.shape[1]) * 0.1))
    np.testing.assert_allclose(moved, base, rtol=1e-9)


def test_pwcca_is_invariant_to_isotropic_scaling_but_not_to_rotating_neurons():
    # Its weights sum |projections| over individual neurons, so the neuron basis matters.
    x, y = _pair(7)
    with jax.enable_x64(True):
        base = float(pwcca(x, y))
        np.testing.assert_allclose(float(pwcca(3.0 * x, 0.2 * y)), base, rtol=1e-9)
        assert abs(float(pwcca(x, y @ _orthogonal(2, y.shape[1]))) - base) > 1e-4


def test_cca_family_invariant_to_invertible_linear_maps_and_cka_is_not():
    x, y = _pair(8)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(x.shape[1], x.shape[1])) + 3 * np.eye(x.shape[1])
    b = rng.normal(size=(y.shape[1], y.shape[1])) + 3 * np.eye(y.shape[1])
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(cca_coefficients(x @ a, y @ b)),
                                   np.asarray(cca_coefficients(x, y)), rtol=1e-8)
        np.testing.assert_allclose(float(cca(x @ a + 5.0, y @ b)), float(cca(x, y)), rtol=1e-9)
        assert abs(float(linear_cka(x @ a, y)) - float(linear_cka(x, y))) > 1e-3


# ---------------------------------------------------------------------------------------------
# Values derivable by hand


def _orthonormal_centred_columns(seed, n, k):
    return np.linalg.qr(_c(np.random.default_rng(seed).normal(size=(n, k))))[0]


def test_cca_recovers_planted_canonical_correlations():
    # x = Q1 A, y = (Q1 diag(rho) + Q2 diag(sqrt(1 - rho^2))) B with Q = [Q1 Q2] orthonormal and
    # centred: the canonical correlations are exactly rho, whatever the invertible A and B.
    rho = np.array([0.95, 0.8, 0.5, 0.2, 0.05])
    q = _orthonormal_centred_columns(0, 50, 10)
    rng = np.random.default_rng(1)
    x = q[:, :5] @ (rng.normal(size=(5, 5)) + 2 * np.eye(5))
    y = (q[:, :5] * rho + q[:, 5:] * np.sqrt(1 - rho ** 2)) @ (rng.normal(size=(5, 5)) + 2 * np.eye(5))
    with jax.enable_x64(True):
        np.testing.assert_allclose(np.asarray(cca_coefficients(x, y)), rho, rtol=1e-10)
        np.testing.assert_allclose(float(cca(x, y)), rho.mean(), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(cca_coefficients(x.astype(np.float32), y.astype(np.float32))),
                               rho, atol=1e-5)


def test_linear_cka_of_a_subspace_is_sqrt_k_over_p():
    # x with p orthonormal centred columns, y = its first k: ||y'x||^2 = k, ||x'x|| = sqrt(p),
    # ||y'y|| = sqrt(k), so CKA = k / sqrt(p k) = sqrt(k / p).
    x = _orthonormal_centred_columns(2, 80, 12).astype(np.float32)
    np.testing.assert_allclose(float(linear_cka(x, x[:, :7])), np.sqrt(7 / 12), rtol=1e-5)


def test_debiased_hsic_matches_song_et_al_formula():
    # linear_cka(debiased) = h(x,y) / sqrt(h(x,x) h(y,y)) with the U-statistic of Song et al.
    def hsic_u(k, l):
        n = k.shape[0]
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        one = np.ones(n)
        return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))
    x, y = _pair(9)
    kx, ky = x @ x.T, y @ y.T  # uncentred: the estimator does not need centred kernels
    expected = hsic_u(kx, ky) / np.sqrt(hsic_u(kx, kx) * hsic_u(ky, ky))
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(linear_cka(x, y, debiased=True)), expected, rtol=1e-9)


def test_svcca_keeps_the_directions_holding_the_variance():
    # x: 3 strong directions shared with y plus 9 weak ones (< 0.1% of the variance) of
    # independent noise; y likewise with 4 weak ones. CCA sees the noise; SVCCA at keep=0.99
    # sees only the shared signal, unless y's extra directions are strong.
    rng = np.random.default_rng(3)
    signal = rng.normal(size=(80, 3))
    x = np.hstack([signal * 10, 0.01 * rng.normal(size=(80, 9))]) @ _orthogonal(4, 12)
    y = np.hstack([signal @ rng.normal(size=(3, 3)), 0.01 * rng.normal(size=(80, 4))])
    y_strong = np.hstack([signal, 10 * rng.normal(size=(80, 4))])
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(svcca(x, y)), 1.0, atol=1e-6)
        assert float(cca(x, y)) < 0.8
        assert float(svcca(x, y_strong)) < 0.8


def test_rsa_reference_values():
    # Euclidean RDMs ignore sign flips, scaling and shifts: 0 for an affine map of 1-D points.
    t = np.arange(1.0, 8.0)[:, None]
    assert float(rsa(t, -3 * t + 1)) == pytest.approx(0.0, abs=1e-6)
    # Three points with distances (d01, d02, d12) = (1, 3, 2) and (3, 1, 2): ranks (1, 3, 2)
    # and (3, 1, 2): rho = 1 - 6 (4 + 4 + 0) / (3 (9 - 1)) = -1, so RSA = 2.
    x = np.array([[0.0], [1.0], [3.0]])
    flipped = np.array([[0.0], [3.0], [1.0]])
    np.testing.assert_allclose(float(rsa(x, flipped)), 2.0, atol=1e-6)


def test_rsa_ties_get_average_ranks_as_scipy():
    rng = np.random.default_rng(5)
    xi = rng.integers(0, 3, size=(25, 4)).astype(np.float32)  # many tied distances
    yi = rng.integers(0, 3, size=(25, 2)).astype(np.float32)
    dx = pdist(xi)
    assert len(np.unique(dx)) < len(dx) / 10
    expected = 1 - stats.spearmanr(dx, pdist(yi)).statistic
    np.testing.assert_allclose(float(rsa(xi, yi)), expected, rtol=1e-5)
    # Breaking the ties (ordinal ranks) gives a different value, so the tie handling is tested.
    ordinal = 1 - np.corrcoef(stats.rankdata(dx, "ordinal"), stats.rankdata(pdist(yi), "ordinal"))[0, 1]
    assert abs(ordinal - expected) > 1e-3


# ---------------------------------------------------------------------------------------------
# jit, vmap, errors


@pytest.mark.parametrize("name", BASE)
def test_jit_of_vmap_and_grad(name):
    ours, _ = REFERENCES[name]
    pairs = [_pair(s, dtype=np.float32) for s in range(3)]
    xs, ys = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
    eager = np.array([float(ours(x, y)) for x, y in pairs])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(ours))(xs, ys)), eager, rtol=1e-5)
    # Differentiable (e.g. as a training signal), the well-posedness check included.
    grad = np.asarray(jax.jit(jax.grad(ours))(xs[0], ys[0]))
    assert grad.shape == xs[0].shape and np.all(np.isfinite(grad))
    # RSA depends on the data only through ranks: piecewise constant, zero gradient.
    assert np.all(grad == 0) if name.startswith("rsa") else np.any(grad != 0)


def test_shape_errors():
    x, y = _pair(10, n=20, p1=5, p2=3)
    with pytest.raises(ValueError, match="2-D"):
        cca(x[:, :, None], y)
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, y[:-1])
    for fn in (cca, cca_coefficients, svcca, pwcca):
        with pytest.raises(ValueError, match="p < n"):
            fn(x, np.random.default_rng(0).normal(size=(20, 20)))
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ValueError, match="unknown metric"):
        rsa(x, y, metric="cosine")
    with pytest.raises(ValueError, match="keep"):
        svcca(x, y, keep=1.5)
    with pytest.raises(ValueError, match="p < n"):  # a static check: raised while tracing, too
        jax.jit(cca)(x, np.zeros((20, 25)))


def test_rank_deficient_input_raises_eagerly_and_under_jit_unless_regularised():
    x, y = _pair(11, dtype=np.float32)
    deficient = x.copy()
    deficient[:, -1] = x[:, 0] - 2 * x[:, 1]  # a dependent column
    for fn in (cca, cca_coefficients, pwcca):
        with pytest.raises(ValueError, match="rank-deficient"):
            fn(deficient, y)
        assert np.all(np.isfinite(np.asarray(fn(deficient, y, epsilon=1e-6))))
    # Under jit/vmap the host callback raises when the computation runs.
    with pytest.raises(Exception, match="rank-deficient"):
        np.asarray(jax.jit(jax.vmap(cca))(np.stack([deficient, x]), np.stack([y, y])))
    batched = np.asarray(jax.jit(jax.vmap(cca))(np.stack([x, x]), np.stack([y, y])))
    np.testing.assert_allclose(batched, float(cca(x, y)), rtol=1e-5)
    # The regulariser gives the dependent column nothing new: the coefficients are those of the
    # 11 independent columns.
    np.testing.assert_allclose(np.asarray(cca_coefficients(deficient, y, epsilon=1e-9)),
                               np_cca_coefficients(deficient[:, :11].astype(np.float64), y),
                               atol=1e-4)
    # SVCCA keeps only directions with variance, so it needs no regulariser.
    assert 0 < float(svcca(deficient, y)) < 1


@pytest.mark.parametrize("fn", [cca, svcca, pwcca, linear_cka, rbf_cka, rsa,
                                functools.partial(rsa, metric="correlation")])
def test_constant_input_raises(fn):
    x, _ = _pair(12, dtype=np.float32)
    with pytest.raises(ValueError, match="constant|all entries equal|median"):
        fn(x, np.full((x.shape[0], 7), 7.3, np.float32))


def test_correlation_rdm_rejects_an_example_with_constant_features():
    x, y = _pair(13, dtype=np.float32)
    y = y.copy()
    y[4] = 2.0
    with pytest.raises(ValueError, match="constant features"):
        rsa(x, y, metric="correlation")
    assert np.isfinite(float(rsa(x, y)))  # fine for Euclidean RDMs


def test_batched_metrics_do_not_deadlock_xla_cpu():
    # Two batched LAPACK calls running at once deadlock XLA:CPU's intra-op pool on few cores
    # (jaxlib's ParallelBatchMap blocks inside the pool); the metrics chain their LAPACK calls.
    # Without that chain this hangs on a 2-core machine, so run it in a child with a deadline.
    import subprocess
    import sys
    code = (
        "import numpy as np, jax\n"
        "from metajax.similarity import pwcca, svcca\n"
        "rng = np.random.default_rng(0)\n"
        "xs = rng.normal(size=(8, 1000, 128)).astype(np.float32)\n"
        "ys = rng.normal(size=(8, 1000, 64)).astype(np.float32)\n"
        "for fn in (pwcca, svcca):\n"
        "    assert np.all(np.isfinite(np.asarray(jax.jit(jax.vmap(fn))(xs, ys))))\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rsa_matrix_equals_pairwise_rsa():
    x, y = _pair(14, dtype=np.float32)
    xs = np.stack([x[:, :7], y, np.tanh(y), x[:, 5:12]])
    got = np.asarray(rsa_matrix(xs))
    expected = np.array([[float(rsa(a, b)) for b in xs] for a in xs])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.allclose(np.diag(got), 0, atol=1e-6) and np.allclose(got, got.T)
