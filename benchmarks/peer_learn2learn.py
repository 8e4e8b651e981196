"""The peer: learn2learn's MAML / first-order MAML / ANIL (PyTorch) on a metajax workload's shapes.

Used by ``benchmarks/meta_step.py --peer learn2learn``; never imported by metajax, its tests or CI.
Needs ``torch`` and ``learn2learn`` (``pip install torch learn2learn``; see the README's
performance section for a set of versions that installs on a CPU machine).

The models are learn2learn's own Conv4s, which match metajax's: ``OmniglotCNN`` (64 filters,
stride-2 convolutions, batch norm) for 28x28 inputs and ``MiniImagenetCNN`` (32 filters, 2x2
max-pool) for 84x84. A meta-step is the learn2learn recipe: per task ``maml.clone()``,
``inner_steps`` calls of ``adapt(support loss)``, the query loss divided by the meta-batch and
``backward()`` (which accumulates the meta-gradient), then one Adam step. Test-time adaptation
is ``clone()`` and 10 first-order ``adapt`` calls per task, for the whole task batch.
"""
from __future__ import annotations

import time

from timing import median_seconds  # beside this file


def available() -> str | None:
    """None when torch and learn2learn import, else the reason they do not."""
    try:
        import learn2learn  # noqa: F401
        import torch  # noqa: F401
    except Exception as err:  # ImportError, or a broken torchvision/gym beside learn2learn
        return f"{type(err).__name__}: {err}"
    return None


def _synchronize(device: str) -> None:
    # CUDA kernels run asynchronously: a timed call ends when the GPU is done.
    if device != "cpu":
        import torch

        torch.cuda.synchronize()


def matmul_gflops(size: int = 2048, repeats: int = 10, threads: int | None = None,
                  device: str = "cpu") -> float:
    """torch's float32 matmul rate (GFLOP/s) on this machine, for the roofline line."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)

    def product():
        torch.mm(a, b)
        _synchronize(device)
    product()
    return 2 * size**3 / 1e9 / median_seconds(product, repeats)


def bench(model_name: str, shape, ways: int, shots: int, queries: int, meta_batch: int,
          inner_steps: int, inner_lr: float, algo: str, *, repeats: int,
          threads: int | None = None, return_step: bool = False, device: str = "cpu"):
    """Seconds per meta-step and per test-time adaptation of learn2learn on random data.

    Args:
      model_name: metajax's model name, ``"conv4"`` or ``"conv4-pool"``.
      shape: one image's (H, W, C).
      algo: ``"maml"``, ``"fomaml"`` or ``"anil"``.
      threads: ``torch.set_num_threads`` (default: torch's own choice, all cores).
      return_step: return the untimed meta-step function instead (for a profiler).
      device: torch's device, ``"cpu"`` or ``"cuda"`` (each timed call then waits for the GPU).
    """
    import learn2learn as l2l
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    height, width, channels = shape
    if model_name == "conv4":
        model = l2l.vision.models.OmniglotCNN(output_size=ways, hidden_size=64, layers=4)
    elif model_name == "conv4-pool":
        model = l2l.vision.models.MiniImagenetCNN(output_size=ways, hidden_size=32, layers=4)
    else:
        raise ValueError(f"no learn2learn counterpart for model {model_name!r}")
    model.to(device)

    if algo == "anil":
        body = model.features
        adapted = l2l.algorithms.MAML(model.classifier, lr=inner_lr)
        meta_params = list(body.parameters()) + list(adapted.parameters())
    elif algo in ("maml", "fomaml"):
        body = None
        adapted = l2l.algorithms.MAML(model, lr=inner_lr, first_order=algo == "fomaml")
        meta_params = list(adapted.parameters())
    else:
        raise ValueError(f"no learn2learn counterpart for algorithm {algo!r}")
    optimizer = torch.optim.Adam(meta_params, lr=1e-3)

    def images(n):
        x = torch.randint(0, 256, (n, channels, height, width)).float() / 255.0
        # OmniglotCNN flattens its input and reshapes to 1x28x28 itself.
        return x.to(device)
    xs, ys = images(ways * shots), torch.arange(ways).repeat_interleave(shots).to(device)
    xq, yq = images(ways * queries), torch.arange(ways).repeat_interleave(queries).to(device)

    def features(x):
        return body(x) if body is not None else x

    def meta_step():
        optimizer.zero_grad()
        for _ in range(meta_batch):
            learner = adapted.clone()
            fs, fq = features(xs), features(xq)
            for _ in range(inner_steps):
                learner.adapt(F.cross_entropy(learner(fs), ys))
            (F.cross_entropy(learner(fq), yq) / meta_batch).backward()
        optimizer.step()
        _synchronize(device)

    def adapt10():
        for _ in range(meta_batch):
            learner = adapted.clone()
            with torch.no_grad():
                fs = features(xs)
            for _ in range(10):
                learner.adapt(F.cross_entropy(learner(fs), ys), first_order=True)
            with torch.no_grad():
                learner(features(xq)).argmax(-1)
        _synchronize(device)

    if return_step:
        return meta_step
    tic = time.perf_counter()
    meta_step()
    first_s = time.perf_counter() - tic
    step_s = median_seconds(meta_step, repeats)
    adapt10()
    adapt_s = median_seconds(adapt10, repeats)
    return {"peer": "learn2learn", "algo": algo, "torch": torch.__version__, "device": device,
            "l2l": l2l.__version__, "threads": torch.get_num_threads(),
            "meta_batch": meta_batch, "inner_steps": inner_steps,
            "first_step_s": round(first_s, 3), "step_s": round(step_s, 4),
            "tasks_per_s": round(meta_batch / step_s, 2), "adapt10_s_per_batch": round(adapt_s, 4)}
