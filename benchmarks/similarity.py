"""Speed of the similarity metrics: jitted JAX against NumPy running the same algorithms.

Two workloads:

* one pair: x (1000 x 256) and y (1000 x 128), each metric once; JAX's compile time is reported
  separately from the median run time of the compiled function;
* many layer pairs: ``--pairs`` pairs of the same shapes in one ``jax.jit(jax.vmap(metric))``
  call, against a Python loop of NumPy calls and a Python loop of (compiled) JAX calls.

The NumPy versions follow the same algebra as ``metajax.analysis.similarity`` (SVD-based CCA,
feature-space linear CKA, Gram-matrix RBF CKA, ranks by ``scipy.stats.rankdata``), so the
comparison is one of execution, not of algorithms; their values are checked against JAX's.

    python benchmarks/similarity.py                    # table, then one JSON line
    python benchmarks/similarity.py --pairs 32 --repeats 5 --dtype float64 --json out.json

On a machine shared with other jobs, OPENBLAS_NUM_THREADS=1 keeps NumPy's BLAS threads from
spinning against XLA's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from metajax.analysis import similarity as sim

# ---------------------------------------------------------------------------------------------
# NumPy versions of the same algorithms


def _np_svd_basis(a):
    return np.linalg.svd(a - a.mean(0), full_matrices=False)


def np_cca(x, y):
    (ux, _, _), (uy, _, _) = _np_svd_basis(x), _np_svd_basis(y)
    return np.clip(np.linalg.svd(ux.T @ uy, compute_uv=False), 0, 1).mean()


def np_svcca(x, y, keep=0.99):
    kept = []
    for a in (x, y):
        u, s, _ = _np_svd_basis(a)
        energy = np.cumsum(s ** 2)
        kept.append(u[:, : min(1 + int(np.sum(energy < keep * energy[-1])), len(s))])
    return np.clip(np.linalg.svd(kept[0].T @ kept[1], compute_uv=False), 0, 1).mean()


def np_pwcca(x, y):
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    (ux, sx, vtx), (uy, _, _) = _np_svd_basis(x), _np_svd_basis(y)
    ua, rho, _ = np.linalg.svd(ux.T @ uy, full_matrices=False)
    q, _ = np.linalg.qr(sx[:, None] * ua)
    weights = np.abs(q.T @ (sx[:, None] * vtx)).sum(1)
    return np.sum(weights * np.clip(rho, 0, 1)) / weights.sum()


def np_linear_cka(x, y):
    x, y = x - x.mean(0), y - y.mean(0)
    return np.sum((x.T @ y) ** 2) / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def _np_sq_distances(a):
    a = a - a[:1]
    gram = a @ a.T
    sq = np.diag(gram)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0)


def np_rbf_cka(x, y, threshold=1.0):
    grams = []
    for a in (x, y):
        d2 = _np_sq_distances(a)
        k = np.exp(-d2 / (2 * threshold ** 2 * np.median(d2)))
        means = k.mean(0)
        grams.append(k - means[:, None] - means[None, :] + means.mean())
    kx, ky = grams
    return np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))


def np_rsa(x, y):
    i, j = np.triu_indices(x.shape[0], 1)
    rx = stats.rankdata(_np_sq_distances(x)[i, j])
    ry = stats.rankdata(_np_sq_distances(y)[i, j])
    return 1 - np.corrcoef(rx, ry)[0, 1]


METRICS = {
    "cca": (sim.cca, np_cca),
    "svcca": (sim.svcca, np_svcca),
    "pwcca": (sim.pwcca, np_pwcca),
    "linear_cka": (sim.linear_cka, np_linear_cka),
    "rbf_cka": (sim.rbf_cka, np_rbf_cka),
    "rsa": (sim.rsa, np_rsa),
}

# ---------------------------------------------------------------------------------------------


def _median_seconds(fn, repeats: int) -> float:
    return statistics.median(timeit.repeat(lambda: jax.block_until_ready(fn()), number=1,
                                           repeat=repeats))


def _layer_pairs(num: int, n: int, p1: int, p2: int, dtype, seed: int = 0):
    """Correlated activation pairs: y is a noisy, nonlinear map of x's first half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num, n, p1))
    y = np.tanh(x[:, :, : p1 // 2] @ rng.normal(size=(p1 // 2, p2)) / np.sqrt(p1 / 2))
    y = y + 0.5 * rng.normal(size=y.shape)
    return x.astype(dtype), y.astype(dtype)


def bench(name: str, xs, ys, *, repeats: int) -> dict:
    jax_fn, np_fn = METRICS[name]
    x, y = xs[0], ys[0]
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    one = jax.jit(jax_fn)
    tic = time.perf_counter()
    jax_value = float(jax.block_until_ready(one(jx, jy)))
    compile_s = time.perf_counter() - tic
    np_value = float(np_fn(x, y))
    row = {
        "metric": name, "shape": [list(x.shape), list(y.shape)], "dtype": str(x.dtype),
        "jax_value": jax_value, "numpy_value": np_value,
        "jax_compile_s": compile_s,
        "jax_s": _median_seconds(lambda: one(jx, jy), repeats),
        "numpy_s": _median_seconds(lambda: np_fn(x, y), repeats),
    }
    jxs, jys = jnp.asarray(xs), jnp.asarray(ys)
    many = jax.jit(jax.vmap(jax_fn))
    tic = time.perf_counter()
    batch_values = np.asarray(jax.block_until_ready(many(jxs, jys)))
    row["pairs"] = len(xs)
    row["vmap_compile_s"] = time.perf_counter() - tic
    row["vmap_s"] = _median_seconds(lambda: many(jxs, jys), repeats)
    row["jax_loop_s"] = _median_seconds(
        lambda: [one(jxs[k], jys[k]) for k in range(len(xs))], repeats)
    row["numpy_loop_s"] = _median_seconds(
        lambda: [np_fn(xs[k], ys[k]) for k in range(len(xs))], max(1, repeats // 2))
    row["max_abs_diff_vs_numpy"] = float(np.max(np.abs(
        batch_values - np.array([np_fn(xs[k], ys[k]) for k in range(len(xs))]))))
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", default=",".join(METRICS))
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--p1", type=int, default=256)
    parser.add_argument("--p2", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=16, help="layer pairs in the vmapped call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    xs, ys = _layer_pairs(args.pairs, args.examples, args.p1, args.p2, np.dtype(args.dtype))
    rows = []
    header = (f"{'metric':<11} {'numpy s':>9} {'jax s':>9} {'speedup':>7} {'compile s':>9} | "
              f"{args.pairs} pairs: {'numpy loop':>10} {'jax loop':>9} {'vmap':>9} {'speedup':>7}"
              f"  max|diff|")
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), dtype {args.dtype}, "
          f"x {args.examples}x{args.p1}, y {args.examples}x{args.p2}, median of {args.repeats}")
    print(header)
    for name in args.metrics.split(","):
        row = bench(name, xs, ys, repeats=args.repeats)
        row["device"] = jax.devices()[0].device_kind
        rows.append(row)
        print(f"{name:<11} {row['numpy_s']:9.4f} {row['jax_s']:9.4f} "
              f"{row['numpy_s'] / row['jax_s']:7.1f} {row['jax_compile_s']:9.2f} | "
              f"{'':>{len(str(args.pairs)) + 7}} {row['numpy_loop_s']:10.3f} {row['jax_loop_s']:9.3f} "
              f"{row['vmap_s']:9.3f} {row['numpy_loop_s'] / row['vmap_s']:7.1f}"
              f"  {row['max_abs_diff_vs_numpy']:.1e}", flush=True)
    print(json.dumps(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
