"""Representation similarity as jitted linear algebra: CCA, SVCCA, PWCCA, CKA and RSA.

Every metric compares two activation matrices of the same examples, ``x`` of shape
``(n_examples, p1)`` and ``y`` of shape ``(n_examples, p2)``, and returns a scalar (or, for
:func:`cca_coefficients`, a vector). Inputs are centred inside (each column minus its mean), so
callers pass raw activations. All metrics are pure ``jax.numpy`` and can be ``jax.jit``-ed and
``jax.vmap``-ed (options that change the computation, ``debiased`` and ``metric``, must then be
static); they compute in float32, or float64 when given float64 inputs with x64 enabled.

Ill-posed inputs
----------------
Shape problems (not 2-D, different numbers of examples, ``p >= n`` for the CCA family, too few
examples for a debiased estimator) raise ``ValueError`` at call or trace time.

Value problems (a rank-deficient input to CCA/PWCCA, a constant representation, a degenerate
RBF bandwidth or a constant RDM) depend on the numbers, which ``jit`` does not know when it
traces. Each metric therefore computes a "well-posed" flag next to its value:

* called on concrete arrays (the usual, eager call; the numerical core is jitted either way),
  a false flag raises ``ValueError`` naming the problem and the fix;
* called inside ``jit``/``vmap``, a host callback raises the same ``ValueError`` when the
  computation runs; it reaches the caller as a ``JaxRuntimeError`` that carries the message.

So no ill-posed input yields a NaN or a plausible-looking number.

``cca_coefficients``, ``cca`` and ``pwcca`` take ``epsilon``, a ridge regulariser that makes
rank-deficient inputs well-posed (see :func:`cca_coefficients`); ``svcca`` needs none because it
keeps only directions that carry variance.

References: Hotelling (1936) CCA; Raghu et al. (2017) SVCCA; Morcos et al. (2018) PWCCA and its
reference implementation google/svcca ``pwcca.py``; Kornblith et al. (2019) CKA and their
notebook; Kriegeskorte et al. (2008) RSA, as used by Goerttler & Obermayer for MAML.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["cca", "cca_coefficients", "linear_cka", "pwcca", "rbf_cka", "rsa", "rsa_matrix",
           "svcca"]

RSA_METRICS = ("euclidean", "correlation")


# ----------------------------------------------------------------------------------------------
# Input checks


def _prepare(x, y, name: str, *, min_examples: int = 2, cca_family: bool = False):
    """Static checks; returns ``x, y`` as arrays of a common floating dtype (>= float32)."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"{name}: x and y must be 2-D (n_examples, n_features), got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}; flatten or reshape activations "
                         "first (e.g. x.reshape(x.shape[0], -1))")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: x and y must hold the same examples (rows), got "
                         f"{x.shape[0]} and {y.shape[0]} rows")
    n = x.shape[0]
    if n < min_examples:
        raise ValueError(f"{name}: needs at least {min_examples} examples, got {n}")
    if x.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"{name}: x and y need at least one feature, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if cca_family and max(x.shape[1], y.shape[1]) >= n:
        raise ValueError(
            f"{name}: CCA needs fewer features than examples (p < n), got p1={x.shape[1]}, "
            f"p2={y.shape[1]}, n={n}: with p >= n every centred representation spans the whole "
            "sample space and all canonical correlations are 1. Use more examples (for conv "
            "layers, treat spatial positions as examples: (n*h*w, channels)) or a CKA/RSA metric")
    for name_, a in (("x", x), ("y", y)):
        if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)
                or a.dtype == jnp.bool_):
            raise ValueError(f"{name}: {name_} must be real-valued, got dtype {a.dtype}")
    dtype = jnp.promote_types(jnp.result_type(x, y), jnp.float32)
    return x.astype(dtype), y.astype(dtype)


def _zeros_or_raise(ok, *, message: str, dtype):
    if not np.all(np.asarray(ok)):
        raise ValueError(message)
    return np.zeros(np.shape(ok), dtype)


def _checked(value, ok, message: str):
    """``value``, after raising ``ValueError(message)`` where the flag ``ok`` is false.

    Concrete ``ok`` (an eager call): raises now. Traced ``ok`` (inside ``jit``/``vmap``): a host
    callback raises when the computation runs. The callback returns zeros that are added to
    ``value``, so it cannot be pruned; it is batched by expanding dims (one call per ``vmap``,
    not one per element), and it has no tangent, so gradients flow through ``value`` untouched.
    """
    if not isinstance(ok, jax.core.Tracer):
        if not np.all(np.asarray(ok)):
            raise ValueError(message)
        return value
    zero = jax.pure_callback(
        functools.partial(_zeros_or_raise, message=message, dtype=value.dtype),
        jax.ShapeDtypeStruct(ok.shape, value.dtype), ok, vmap_method="expand_dims")
    return value + jnp.expand_dims(zero, tuple(range(zero.ndim, value.ndim)))


def _centre(x):
    return x - jnp.mean(x, axis=0, keepdims=True)


def _not_constant(x, xc):
    """True when centring leaves more than rounding noise: ||x_c|| > n eps ||x||."""
    eps = jnp.finfo(x.dtype).eps
    return jnp.linalg.norm(xc) > x.shape[0] * eps * jnp.linalg.norm(x)


# ----------------------------------------------------------------------------------------------
# The CCA family


def _after(dependency, value):
    """``value``, given a data dependency on ``dependency`` so that it is computed afterwards.

    Why: XLA:CPU runs independent ops concurrently on its intra-op thread pool, and jaxlib's
    batched LAPACK kernels (QR, SVD under ``vmap``) fan their batch out into that same pool and
    block until it is done. Two of them at once on a 2-thread pool wait for each other forever
    (observed with jax 0.10 on 2 cores). Chaining every LAPACK call in a metric after the
    previous one keeps at most one of them running, so ``jit(vmap(metric))`` cannot deadlock.
    ``lax.optimization_barrier`` does not order them (XLA:CPU schedules by buffers, and the
    barrier aliases them), so the dependency is a select on one entry of ``dependency`` that
    XLA cannot fold: NaN there (which would make the result NaN anyway) propagates.
    """
    anchor = jnp.ravel(dependency)[0]
    return jnp.where(jnp.isnan(anchor), jnp.nan, value)


def _qr_centred(x):
    """Thin QR of the centred ``x``: ``x_c = Q R``; and whether ``x`` varies at all.

    ``Q`` is an orthonormal basis of the column space of ``x_c``, which is all that plain CCA
    needs: the canonical correlations are the singular values of ``Q_x^T Q_y``.
    """
    xc = _centre(x)
    q, r = jnp.linalg.qr(xc)
    return q, r, _not_constant(x, xc)


def _rank_tolerance(x, largest):
    n, p = x.shape
    return max(n, p) * jnp.finfo(x.dtype).eps * largest


def _qr_full_rank(x, r):
    """No diagonal entry of R is a numerical zero (then R, and x_c, are singular)."""
    d = jnp.abs(jnp.diagonal(r))
    return jnp.all(d > _rank_tolerance(x, jnp.max(d)))


def _svd_frame(x, r, epsilon):
    """The SVD ``x_c = (Q U_r) diag(s) V^T`` from ``R = U_r diag(s) V^T``, and whitening factors.

    Regularised whitening ``x_c (S + lam I)^{-1/2}`` equals (up to the rotation ``V^T`` and a
    constant) ``Q U_r diag(f)`` with ``f = s / sqrt(s^2 + lam)``, ``lam = epsilon * mean(s^2)``;
    directions with ``s <= max(n, p) * eps * s_max`` are numerical zeros and get ``f = 0``.

    Returns:
      ``(u_r, s, vt, f, full_rank)``.
    """
    u_r, s, vt = jnp.linalg.svd(r)
    nonzero = s > _rank_tolerance(x, s[0])
    lam = epsilon * jnp.sum(s ** 2) / x.shape[1]
    f = jnp.where(nonzero, s / jnp.sqrt(jnp.where(nonzero, s ** 2 + lam, 1.0)), 0.0)
    return u_r, s, vt, f, jnp.all(nonzero)


def _rank_message(name: str) -> str:
    return (f"{name}: an input is constant, or rank-deficient after centring (a constant column, "
            "or columns that are linear combinations of others), so its canonical correlations "
            f"are not defined. Pass epsilon > 0 (e.g. {name}(x, y, epsilon=1e-6)) to regularise, "
            "drop the redundant columns, or use svcca, which keeps only directions with variance")


def _is_zero(epsilon) -> bool:
    """A literal 0 selects the unregularised (QR-only) path statically."""
    return not isinstance(epsilon, jax.core.Tracer) and float(epsilon) == 0.0


@functools.partial(jax.jit, static_argnames="regularised")
def _cca_core(x, y, epsilon, regularised: bool):
    qx, rx, varies_x = _qr_centred(x)
    qy, ry, varies_y = _qr_centred(_after(qx, y))
    a = qx.T @ qy
    if regularised:
        ux, _, _, fx, _ = _svd_frame(x, _after(qy, rx), epsilon)
        uy, _, _, fy, _ = _svd_frame(y, _after(ux, ry), epsilon)
        a = (ux * fx).T @ a @ (uy * fy)
        ok = varies_x & varies_y
    else:
        ok = varies_x & varies_y & _qr_full_rank(x, rx) & _qr_full_rank(y, ry)
    rho = jnp.linalg.svd(a, compute_uv=False)
    return jnp.clip(rho, 0.0, 1.0), ok


def cca_coefficients(x, y, *, epsilon: float = 0.0) -> jax.Array:
    """The canonical correlations of ``x`` and ``y``, in descending order.

    With centred ``x_c``, ``y_c`` and covariances ``S_xx``, ``S_xy``, ``S_yy``, the canonical
    correlations are the singular values of ``S_xx^{-1/2} S_xy S_yy^{-1/2}``. They are computed
    stably without forming covariances: with thin QR factorisations ``x_c = Q_x R_x`` and
    ``y_c = Q_y R_y``, ``rho_i = sigma_i(Q_x^T Q_y)``, the cosines of the principal angles between
    the column spaces of ``x_c`` and ``y_c``. Invariant to invertible linear maps of either input.

    ``epsilon > 0`` regularises: ``S_xx + lam_x I`` with ``lam_x = epsilon * trace(S_xx) / p1``
    (likewise for y), which shrinks each singular direction of ``x_c`` by ``s / sqrt(s^2 + lam)``
    and gives directions without variance a correlation of 0. Relative to the mean variance, so
    isotropic scaling still leaves the result unchanged.

    Args:
      x: ``(n, p1)`` activations; ``p1 < n``.
      y: ``(n, p2)`` activations of the same examples; ``p2 < n``.
      epsilon: ridge regulariser (0: plain CCA; inputs must then have full column rank after
        centring).

    Returns:
      ``(min(p1, p2),)`` canonical correlations in [0, 1], descending.

    Raises:
      ValueError: shapes as described above; a rank-deficient input with ``epsilon == 0``
        (see the module docstring for how this is reported under ``jit``).
    """
    x, y = _prepare(x, y, "cca_coefficients", cca_family=True)
    rho, ok = _cca_core(x, y, jnp.asarray(epsilon, x.dtype), not _is_zero(epsilon))
    return _checked(rho, ok, _rank_message("cca_coefficients"))


def cca(x, y, *, epsilon: float = 0.0) -> jax.Array:
    """Mean CCA similarity: ``mean_i rho_i`` over the ``min(p1, p2)`` canonical correlations.

    1 when one representation is an invertible linear map of the other; see
    :func:`cca_coefficients` for the definition, arguments and errors.
    """
    x, y = _prepare(x, y, "cca", cca_family=True)
    rho, ok = _cca_core(x, y, jnp.asarray(epsilon, x.dtype), not _is_zero(epsilon))
    return _checked(jnp.mean(rho), ok, _rank_message("cca"))


def _kept_directions(s, keep):
    """Smallest k with sum_{i<k} s_i^2 >= keep * sum_i s_i^2 (at least 1, at most p)."""
    energy = jnp.cumsum(s ** 2)
    k = 1 + jnp.sum(energy < keep * energy[-1])
    return jnp.minimum(k, s.shape[0])


@jax.jit
def _svcca_core(x, y, keep):
    qx, rx, varies_x = _qr_centred(x)
    qy, ry, varies_y = _qr_centred(_after(qx, y))
    ok = varies_x & varies_y
    kept_bases = []
    previous = qy
    for a, r in ((x, rx), (y, ry)):
        u_r, s, _, f, _ = _svd_frame(a, _after(previous, r), 0.0)
        previous = u_r
        k = _kept_directions(s, keep)
        kept = jnp.arange(s.shape[0]) < k
        # The kept directions must carry variance; null ones would give arbitrary correlations.
        ok = ok & jnp.all(jnp.where(kept, f > 0, True))
        kept_bases.append((u_r * kept, k))
    (ux, kx), (uy, ky) = kept_bases
    # U_{x,k}^T U_{y,k} = (Q_x U_rx)_k^T (Q_y U_ry)_k, all in the small R frames.
    rho = jnp.clip(jnp.linalg.svd(ux.T @ (qx.T @ qy) @ uy, compute_uv=False), 0.0, 1.0)
    m = jnp.minimum(kx, ky)
    mean = jnp.sum(jnp.where(jnp.arange(rho.shape[0]) < m, rho, 0.0)) / m
    return mean, ok


def svcca(x, y, *, keep: float = 0.99) -> jax.Array:
    """SVCCA similarity (Raghu et al. 2017): CCA on each input's top singular directions.

    For each centred input ``a_c = U diag(s) V^T``, keep the smallest number ``k`` of singular
    directions with ``sum_{i<k} s_i^2 >= keep * sum_i s_i^2`` (``keep`` of the variance), i.e.
    the reduced representation ``U_k diag(s_k)``. The result is the mean of the
    ``min(k_x, k_y)`` canonical correlations of the two reduced representations,
    ``mean_i sigma_i(U_{x,k_x}^T U_{y,k_y})``. The ``k`` are data-dependent, so they are applied as
    masks: shapes stay static and the function jits. (The SVD is taken as QR of ``a_c``, then
    SVD of the small ``R``.)

    Args:
      x: ``(n, p1)`` activations; ``p1 < n``.
      y: ``(n, p2)`` activations of the same examples; ``p2 < n``.
      keep: fraction of variance kept per input, in (0, 1].

    Returns:
      A scalar in [0, 1].

    Raises:
      ValueError: shapes as :func:`cca_coefficients`; ``keep`` outside (0, 1]; a constant input,
        or ``keep`` so close to 1 that directions without variance would be kept.
    """
    x, y = _prepare(x, y, "svcca", cca_family=True)
    if not isinstance(keep, jax.core.Tracer) and not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"svcca: keep must be in (0, 1] (the fraction of variance kept), got {keep}")
    value, ok = _svcca_core(x, y, jnp.asarray(keep, x.dtype))
    return _checked(value, ok, "svcca: an input is constant, or keep is so close to 1 that "
                    "singular directions without variance would be kept; lower keep (e.g. 0.99)")


@jax.jit
def _pwcca_core(x, y, epsilon):
    qx, rx, varies_x = _qr_centred(x)
    qy, ry, varies_y = _qr_centred(_after(qx, y))
    ux, sx, vtx, fx, full_x = _svd_frame(x, _after(qy, rx), epsilon)
    uy, _, _, fy, full_y = _svd_frame(y, _after(ux, ry), epsilon)
    # With x_c = U_x diag(s) V_x^T, M = V_x A V_y^T for A = diag(f_x) U_x^T U_y diag(f_y); the
    # left singular vectors of M are U' = V_x U_a.
    ua, rho, _ = jnp.linalg.svd((ux * fx).T @ (qx.T @ qy) @ (uy * fy), full_matrices=False)
    rho = jnp.clip(rho, 0.0, 1.0)
    # The reference's directions are x_c U' = U_x diag(s) U_a, orthonormalised by QR; since U_x
    # has orthonormal columns, QR(U_x B) = U_x QR(B) with the small B = diag(s) U_a.
    q, _ = jnp.linalg.qr(sx[:, None] * ua)
    # Weight of direction j: sum over neurons k of |<U_x q_j, x_c[:, k]>|, and
    # (U_x q)^T x_c = q^T diag(s) V_x^T: a p1 x p1 product.
    weights = jnp.sum(jnp.abs(q.T @ (sx[:, None] * vtx)), axis=1)
    value = jnp.sum(weights * rho) / jnp.sum(weights)
    return value, varies_x & varies_y & ((full_x & full_y) | (epsilon > 0))


def pwcca(x, y, *, epsilon: float = 0.0) -> jax.Array:
    """Projection-weighted CCA (Morcos et al. 2018), as google/svcca's ``pwcca.py`` defines it.

    On centred inputs, let ``M = S_xx^{-1/2} S_xy S_yy^{-1/2} = U' diag(rho) W^T`` (with the
    symmetric inverse square roots). The reference takes the canonical directions of the input
    with fewer neurons, say x, as ``h = x_c U'`` (the rotated activations, one column per
    direction), orthonormalises them, ``Q R = h``, and weights direction ``j`` by how much of the
    neurons it accounts for: ``alpha_j = sum_k |<q_j, x_c[:, k]>|``. The result is
    ``sum_j alpha_j rho_j / sum_j alpha_j``.

    The reference crashes when ``p1 > p2`` (its ``else`` branch indexes ``acts1`` with the
    mask of ``acts2``); what it means to compute there is the same weighting on the y side,
    which is what this function does. So ``pwcca(x, y) == pwcca(y, x)`` when ``p1 != p2``; for
    ``p1 == p2`` the x side is weighted, as in the reference, and the metric is not symmetric.
    The weights depend on the neuron basis, so unlike CCA it is not invariant to rotations.

    Args:
      x: ``(n, p1)`` activations; ``p1 < n``.
      y: ``(n, p2)`` activations of the same examples; ``p2 < n``.
      epsilon: ridge regulariser, as in :func:`cca_coefficients`.

    Returns:
      A scalar in [0, 1].

    Raises:
      ValueError: as :func:`cca_coefficients`.
    """
    x, y = _prepare(x, y, "pwcca", cca_family=True)
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    value, ok = _pwcca_core(x, y, jnp.asarray(epsilon, x.dtype))
    return _checked(value, ok, _rank_message("pwcca"))


# ----------------------------------------------------------------------------------------------
# CKA


def _hsic_terms(x, y):
    """For centred x, y: ``||x^T y||_F^2``, the row norms^2 ``d_x``, ``d_y``.

    ``||x^T y||_F^2 = <x x^T, y y^T>``: computed in feature space (p1 x p2 product) when that is
    smaller than the n x n Gram matrices.
    """
    n, p1 = x.shape
    p2 = y.shape[1]
    if p1 * p2 <= n * n:
        cross = jnp.sum((x.T @ y) ** 2)
    else:
        cross = jnp.sum((x @ x.T) * (y @ y.T))
    return cross, jnp.sum(x * x, axis=1), jnp.sum(y * y, axis=1)


def _linear_hsic(x, y, debiased: bool):
    """``n^2 HSIC`` (biased) or ``n (n - 3) HSIC_u`` (debiased) of the linear kernels, x, y centred.

    The unbiased estimator (Song et al. 2012) with K~ = K with zero diagonal,
        n (n-3) HSIC_u = tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1,
    reduces for centred features (K 1 = 0) to
        ||x^T y||^2 - n/(n-2) d_x . d_y + ||x||^2 ||y||^2 / ((n-1)(n-2)).
    """
    cross, dx, dy = _hsic_terms(x, y)
    if not debiased:
        return cross
    n = x.shape[0]
    return cross - n / (n - 2) * jnp.dot(dx, dy) + jnp.sum(dx) * jnp.sum(dy) / ((n - 1) * (n - 2))


@functools.partial(jax.jit, static_argnames="debiased")
def _linear_cka_core(x, y, debiased: bool):
    xc, yc = _centre(x), _centre(y)
    hxy = _linear_hsic(xc, yc, debiased)
    hxx = _linear_hsic(xc, xc, debiased)
    hyy = _linear_hsic(yc, yc, debiased)
    ok = _not_constant(x, xc) & _not_constant(y, yc) & (hxx > 0) & (hyy > 0)
    return hxy / jnp.sqrt(jnp.where(ok, hxx * hyy, 1.0)), ok


def _cka_message(name: str) -> str:
    return (f"{name}: an input is constant across examples (after centring it is zero up to "
            "rounding), or its debiased self-similarity is not positive; CKA is undefined there")


def linear_cka(x, y, *, debiased: bool = False) -> jax.Array:
    """Linear CKA (Kornblith et al. 2019).

    With centred ``x``, ``y`` and linear kernels ``K = x x^T``, ``L = y y^T``,

        CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  HSIC(K, L) = ||y^T x||_F^2 / (n-1)^2,

    which is 1 for identical inputs and invariant to orthogonal transforms and isotropic scaling
    of either input (not to general invertible maps). ``debiased=True`` replaces HSIC by its
    unbiased estimator (Song et al. 2012), as Kornblith et al.'s notebook does; the value may
    then be negative. The feature-space form is used when ``p1 p2 <= n^2``, the Gram form
    otherwise, so wide conv activations cost ``O(n^2 p)``.

    Args:
      x: ``(n, p1)`` activations.
      y: ``(n, p2)`` activations of the same examples.
      debiased: use the unbiased HSIC estimator (needs n >= 4; static under ``jit``).

    Returns:
      A scalar; in [0, 1] unless ``debiased``.

    Raises:
      ValueError: bad shapes; a constant input.
    """
    x, y = _prepare(x, y, "linear_cka", min_examples=4 if debiased else 2)
    value, ok = _linear_cka_core(x, y, bool(debiased))
    return _checked(value, ok, _cka_message("linear_cka"))


def _squared_distances(x):
    """Pairwise squared Euclidean distances between rows, ``|a|^2 + |b|^2 - 2 a.b``.

    The rows are first translated by the first example, which puts the origin inside the data
    (less cancellation than raw coordinates) and, unlike the mean, keeps integer-valued data
    exact, so tied distances stay tied. The norms are read off the Gram diagonal, so
    ``d_ii = 0`` exactly and duplicate examples get identical rows.
    """
    x = x - x[:1]
    gram = x @ x.T
    sq = jnp.diagonal(gram)
    return jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)


def _centre_gram(k, debiased: bool):
    """``H K H`` (biased), or the U-statistic centring of Szekely & Rizzo (2014) (debiased).

    Debiased: with ``K~`` = K with zero diagonal and column sums ``c``, subtract
    ``m_i = c_i / (n-2) - sum(c) / (2 (n-1)(n-2))`` from row i and column i, then zero the
    diagonal; then ``<K~c, L~c> = n (n-3) HSIC_u(K, L)``.
    """
    n = k.shape[0]
    if not debiased:
        means = jnp.mean(k, axis=0)
        means = means - jnp.mean(means) / 2
        return k - means[:, None] - means[None, :]
    k = k * (1.0 - jnp.eye(n, dtype=k.dtype))
    means = jnp.sum(k, axis=0) / (n - 2)
    means = means - jnp.sum(means) / (2 * (n - 1))
    k = k - means[:, None] - means[None, :]
    return k * (1.0 - jnp.eye(n, dtype=k.dtype))


def _median_of_nonnegative(v):
    """Exact median of non-negative floats (the mean of the two middle values for even sizes).

    Why not ``jnp.median``: it sorts, and sorting the n*n distances dominates RBF CKA on CPU.
    For non-negative floats the bit patterns, read as integers, have the same order as the
    values, so the k-th smallest value is found by binary search over bit patterns: 31 (63 for
    float64) counting passes, each a vectorised comparison, and exact.
    """
    ints = jnp.int64 if v.dtype == jnp.float64 else jnp.int32
    keys = jnp.maximum(jax.lax.bitcast_convert_type(jnp.ravel(v), ints), 0)  # -0.0 -> +0.0
    bits = jnp.iinfo(ints).bits - 1

    def kth_smallest(k):
        def halve(_, bounds):
            lo, hi = bounds  # the answer t (smallest key with count(keys <= t) > k) is in [lo, hi]
            mid = lo + (hi - lo) // 2
            enough = jnp.sum(keys <= mid) > k
            return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)
        lo, _ = jax.lax.fori_loop(0, bits + 1, halve,
                                  (jnp.zeros((), ints), jnp.full((), jnp.iinfo(ints).max, ints)))
        return jax.lax.bitcast_convert_type(lo, v.dtype)

    m = keys.shape[0]
    if m % 2:
        return kth_smallest(m // 2)
    return (kth_smallest(m // 2 - 1) + kth_smallest(m // 2)) / 2


def _rbf_gram(x, threshold):
    d2 = _squared_distances(x)
    median = _median_of_nonnegative(d2)
    ok = median > 0
    return jnp.exp(-d2 / (2.0 * threshold ** 2 * jnp.where(ok, median, 1.0))), ok


@functools.partial(jax.jit, static_argnames="debiased")
def _rbf_cka_core(x, y, threshold, debiased: bool):
    kx, ok_x = _rbf_gram(x, threshold)
    ky, ok_y = _rbf_gram(y, threshold)
    kx, ky = _centre_gram(kx, debiased), _centre_gram(ky, debiased)
    nx, ny = jnp.linalg.norm(kx), jnp.linalg.norm(ky)
    ok = ok_x & ok_y & (nx > 0) & (ny > 0)
    return jnp.sum(kx * ky) / jnp.where(ok, nx * ny, 1.0), ok


def rbf_cka(x, y, *, threshold: float = 1.0, debiased: bool = False) -> jax.Array:
    """CKA with RBF kernels (Kornblith et al. 2019), bandwidth set by the median distance.

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with ``sigma = threshold * sqrt(median of all
    n*n squared distances)`` (diagonal zeros included, as in the reference notebook); likewise
    ``L`` for y. Then ``CKA = <K_c, L_c> / (||K_c||_F ||L_c||_F)`` with ``K_c = H K H``
    (``H = I - 11^T/n``), or the unbiased centring with ``debiased=True``.

    Args:
      x: ``(n, p1)`` activations.
      y: ``(n, p2)`` activations of the same examples.
      threshold: bandwidth as a fraction of the median distance.
      debiased: use the unbiased HSIC estimator (needs n >= 4; static under ``jit``).

    Returns:
      A scalar; in [0, 1] unless ``debiased``.

    Raises:
      ValueError: bad shapes; more than half of the pairwise distances are zero (the median
        bandwidth is 0), or a kernel is constant after centring.
    """
    x, y = _prepare(x, y, "rbf_cka", min_examples=4 if debiased else 2)
    value, ok = _rbf_cka_core(x, y, jnp.asarray(threshold, x.dtype), bool(debiased))
    return _checked(value, ok, "rbf_cka: the median squared distance between examples is 0 (most "
                    "examples are identical), or a centred kernel matrix is zero; the RBF "
                    "bandwidth is undefined")


# ----------------------------------------------------------------------------------------------
# RSA


def _average_ranks(v):
    """1-based ranks of ``v`` with ties given their average rank (as scipy's ``rankdata``)."""
    m = v.shape[0]
    order = jnp.argsort(v)
    s = v[order]
    idx = jnp.arange(m)
    differs = s[1:] != s[:-1]
    starts = jax.lax.cummax(jnp.where(jnp.concatenate([jnp.array([True]), differs]), idx, 0))
    ends = jax.lax.cummin(jnp.where(jnp.concatenate([differs, jnp.array([True])]), idx, m - 1),
                          reverse=True)
    ranks_sorted = (starts + ends).astype(v.dtype) / 2 + 1
    return jnp.zeros_like(v).at[order].set(ranks_sorted)


def _rdm(x, metric: str):
    """Upper triangle (i < j, row-major) of the representational dissimilarity matrix.

    ``euclidean``: squared distances ``||x_i - x_j||^2``; RSA only uses their ranks, which the
    square root does not change. ``correlation``: ``1 - pearson(x_i, x_j)`` across features.
    """
    n = x.shape[0]
    if metric == "euclidean":
        d, ok = _squared_distances(x), jnp.asarray(True)
    else:
        rows = x - jnp.mean(x, axis=1, keepdims=True)
        norms = jnp.linalg.norm(rows, axis=1)
        scale = jnp.linalg.norm(x, axis=1)
        ok = jnp.all(norms > x.shape[1] * jnp.finfo(x.dtype).eps * scale)
        z = rows / jnp.where(norms > 0, norms, 1.0)[:, None]
        d = 1.0 - z @ z.T
    i, j = np.triu_indices(n, k=1)
    return d[i, j], ok


@functools.partial(jax.jit, static_argnames="metric")
def _rsa_core(x, y, metric: str):
    dx, ok_x = _rdm(x, metric)
    dy, ok_y = _rdm(y, metric)
    rx, ry = _average_ranks(dx), _average_ranks(dy)
    rx, ry = rx - jnp.mean(rx), ry - jnp.mean(ry)
    nx, ny = jnp.linalg.norm(rx), jnp.linalg.norm(ry)
    ok = ok_x & ok_y & (nx > 0) & (ny > 0)
    rho = jnp.dot(rx, ry) / jnp.where(ok, nx * ny, 1.0)
    # Rounding can put rho a few ulps outside [-1, 1].
    return jnp.clip(1.0 - rho, 0.0, 2.0), ok


def rsa(x, y, *, metric: str = "euclidean") -> jax.Array:
    """RSA dissimilarity (Kriegeskorte et al. 2008; Goerttler & Obermayer): 1 - Spearman(RDMs).

    Each representation gets a representational dissimilarity matrix over its examples,
    ``D_ij = ||x_i - x_j||`` (``metric="euclidean"``) or ``1 - pearson(x_i, x_j)``
    (``"correlation"``, across features). The result is ``1 - spearman(triu(D^x), triu(D^y))``
    over the ``n (n-1) / 2`` pairs ``i < j``, where Spearman's rho is the Pearson correlation of
    the average ranks (ties share their mean rank). 0 for identical inputs, in [0, 2].
    Euclidean RSA is invariant to orthogonal transforms, translations and scaling of either input.

    Args:
      x: ``(n, p1)`` activations, n >= 3.
      y: ``(n, p2)`` activations of the same examples.
      metric: ``"euclidean"`` or ``"correlation"`` (static under ``jit``).

    Returns:
      A scalar in [0, 2].

    Raises:
      ValueError: bad shapes or metric; an RDM whose entries are all equal (Spearman undefined);
        with ``"correlation"``, an example whose features are all equal.
    """
    if metric not in RSA_METRICS:
        raise ValueError(f"rsa: unknown metric {metric!r}; use one of {', '.join(RSA_METRICS)}")
    x, y = _prepare(x, y, "rsa", min_examples=3)
    value, ok = _rsa_core(x, y, metric)
    return _checked(value, ok, f"rsa: an RDM ({metric}) has all entries equal, so its ranks carry "
                    "no information (e.g. all examples identical), or with metric='correlation' "
                    "an example has constant features (its Pearson correlation is undefined)")


@functools.partial(jax.jit, static_argnames="metric")
def _rsa_matrix_core(xs, metric: str):
    rdms, oks = jax.vmap(functools.partial(_rdm, metric=metric))(xs)
    ranks = jax.vmap(_average_ranks)(rdms)
    ranks = ranks - jnp.mean(ranks, axis=1, keepdims=True)
    norms = jnp.linalg.norm(ranks, axis=1)
    ok = jnp.all(oks) & jnp.all(norms > 0)
    z = ranks / jnp.where(norms > 0, norms, 1.0)[:, None]
    return jnp.clip(1.0 - z @ z.T, 0.0, 2.0), ok


def rsa_matrix(xs, *, metric: str = "euclidean") -> jax.Array:
    """RSA dissimilarity between every pair of ``K`` representations of the same examples.

    Equal to ``rsa(xs[i], xs[j], metric=metric)`` for all ``i, j``, but each RDM is built and
    ranked once: with ``r_i`` the centred, normalised rank vector of RDM ``i``, the result is
    ``1 - r_i . r_j``, one ``K x K`` matrix product.

    Args:
      xs: ``(K, n, p)``: K representations (e.g. one layer after different numbers of inner
        steps) of the same n >= 3 examples; pad or project to a common p first if needed.
      metric: ``"euclidean"`` or ``"correlation"`` (static under ``jit``).

    Returns:
      ``(K, K)`` symmetric matrix with zero diagonal, entries in [0, 2].

    Raises:
      ValueError: as :func:`rsa`.
    """
    if metric not in RSA_METRICS:
        raise ValueError(f"rsa_matrix: unknown metric {metric!r}; use one of {', '.join(RSA_METRICS)}")
    xs = jnp.asarray(xs)
    if xs.ndim != 3 or xs.shape[1] < 3:
        raise ValueError(f"rsa_matrix: xs must be (K, n, p) with n >= 3 examples, got shape "
                         f"{tuple(xs.shape)}")
    xs = xs.astype(jnp.promote_types(xs.dtype, jnp.float32))
    value, ok = _rsa_matrix_core(xs, metric)
    return _checked(value, ok, f"rsa_matrix: an RDM ({metric}) has all entries equal, or with "
                    "metric='correlation' an example has constant features")
