"""The run configuration: one frozen dataclass, saved as ``config.json`` in the workdir."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

OUTER_OPTIMIZERS = ("adam", "sgd")
META_LR_SCHEDULES = ("constant", "cosine")
# MAML++'s switches (Antoniou et al. 2019); each needs --algo mamlpp.
MAMLPP_SWITCHES = ("msl", "bnwb", "bnrs", "lslr", "da_steps")
DATA_PLACEMENTS = ("auto", "device", "host")
EVAL_BN = ("batch", "running")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Named configs in ``metajax.configs`` override fields."""

    algo: str = "maml"              # a name (metajax train --help) or package.module:factory
    dataset: str = "sinusoid"       # sinusoid | omniglot | miniimagenet | cifar-fs | fc100 | folder
    data_dir: str | None = None     # None: $METAJAX_DATA_DIR
    source: str = "files"           # files (original archives) | tfds (prepared TFDS data)
    image_size: int | None = None   # folder: resize images to this size (None: keep, all equal)
    data_on: str = "auto"           # device | host (episodes drawn on the host, prefetched) | auto
    model: str | None = None        # conv4 | conv4-pool | resnet12 | mlp | package.module:factory
    head: str | None = None         # the model's head, a params path (None: "head", or last Dense)
    eval_bn: str = "batch"          # stock BatchNorm at evaluation: batch | running statistics
    hidden: int | None = None       # filters / units; None: the paper's
    conv_impl: str = "patches"      # patches | xla
    ways: int = 5
    shots: int = 10                 # K support examples per class (per task for regression)
    query: int = 10                 # query examples per class (per task for regression)
    meta_batch: int = 25
    inner_steps: int = 1
    eval_inner_steps: int = 10
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    outer_optimizer: str = "adam"   # adam | sgd (Reptile's theta += beta * mean(W - theta))
    meta_lr_schedule: str = "constant"  # constant | cosine (MAML++'s CA: cosine to min_meta_lr)
    min_meta_lr: float = 1e-5
    inner_batch: int = 0            # Reptile: examples per inner step, class-balanced (0: all)
    # MAML++ parts (--algo mamlpp); all off is plain MAML.
    msl: bool = False               # multi-step loss ...
    msl_anneal_steps: int = 5000    # ... annealed to the last step's loss over this many steps
    bnwb: bool = False              # per-step batch-norm scale/offset
    bnrs: bool = False              # per-step running batch-norm statistics (used at test time)
    lslr: bool = False              # learned per-layer per-step inner rates
    da_steps: int = 0               # derivative-order annealing: first order for this many steps
    steps: int = 20000
    seed: int = 0
    shard_tasks: bool = True        # split the task batch over all devices when there are several
    task_chunk: int | None = None   # tasks vmapped at a time (0: all); None: 1 on CPU, all elsewhere
    unroll: bool = True             # unroll the inner-loop scan (fast on CPU, slower to compile)
    remat: bool = False             # recompute inner steps in the backward pass (memory flat in steps)
    log_every: int = 50
    eval_every: int = 1000
    eval_tasks: int = 100           # validation tasks per periodic evaluation
    eval_batch: int = 50            # tasks evaluated per compiled call
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    # Meta-RL (metajax.rl): set env to train a policy instead of a few-shot model.
    env: str | None = None          # nav2d | halfcheetah-dir | halfcheetah-vel
    physics: str = "c"              # HalfCheetah engine: c (MuJoCo via pure_callback) | mjx
    trajectories: int = 20          # trajectories per task, before and after adaptation
    horizon: int = 100
    gamma: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01            # TRPO outer step: trust region, CG, backtracking line search
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_steps: int = 15
    ls_ratio: float = 0.8

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Raises ValueError with the fix for settings that cannot work."""
        problems = []
        for name in ("shots", "query", "meta_batch", "steps", "eval_tasks", "eval_batch",
                     "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("inner_steps", "eval_inner_steps"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            problems.append(f"unknown --outer-optimizer {self.outer_optimizer!r}; choose one of: "
                            f"{', '.join(OUTER_OPTIMIZERS)}")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            problems.append(f"unknown --meta-lr-schedule {self.meta_lr_schedule!r}; choose one "
                            f"of: {', '.join(META_LR_SCHEDULES)}")
        if self.da_steps < 0 or self.msl_anneal_steps < 0:
            problems.append("--da-steps and --msl-anneal-steps must be >= 0")
        if self.task_chunk is not None and self.task_chunk < 0:
            problems.append(f"--task-chunk must be >= 0 (0: the whole meta-batch at once), got "
                            f"{self.task_chunk}")
        if self.inner_batch < 0:
            problems.append(f"--inner-batch must be >= 0 (0: the whole task), got {self.inner_batch}")
        elif self.inner_batch and self.algo != "reptile":
            problems.append(f"--inner-batch is Reptile's: use it with --algo reptile "
                            f"(got --algo {self.algo})")
        used = [f"--{name.replace('_', '-')}" for name in MAMLPP_SWITCHES if getattr(self, name)]
        if used and self.algo != "mamlpp":
            problems.append(f"{', '.join(used)} are MAML++ parts: use them with --algo mamlpp "
                            f"(got --algo {self.algo})")
        if self.data_on not in DATA_PLACEMENTS:
            problems.append(f"unknown --data-on {self.data_on!r}; choose one of: "
                            f"{', '.join(DATA_PLACEMENTS)}")
        if self.eval_bn not in EVAL_BN:
            problems.append(f"unknown --eval-bn {self.eval_bn!r}; choose one of: "
                            f"{', '.join(EVAL_BN)}")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"--image-size must be >= 1, got {self.image_size}")
        if self.remat and self.env is None:
            from metajax.algorithms.base import supports
            from metajax.algorithms.registry import get_factory

            if not supports(get_factory(self.algo), "remat"):
                problems.append(f"--remat true needs an algorithm that differentiates through "
                                f"its inner loop (its factory takes remat=); {self.algo} does not")
        if self.dataset != "sinusoid" and self.ways < 2:
            problems.append(f"--ways must be >= 2 for classification, got {self.ways}")
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))
        return self

    def algorithm_options(self) -> dict:
        """Keyword arguments of the algorithm's factory beyond the common ones."""
        options = {"remat": True} if self.remat else {}
        if self.algo == "reptile" and self.inner_batch:
            return {**options, "inner_batch": self.inner_batch}
        if self.algo != "mamlpp":
            return options
        return {**options, "msl": self.msl, "msl_anneal_steps": self.msl_anneal_steps, "bnwb": self.bnwb,
                "bnrs": self.bnrs, "lslr": self.lslr}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def save(self, workdir: Path) -> None:
        path = Path(workdir) / "config.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls, workdir: Path) -> "Config":
        path = Path(workdir) / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {workdir} is not a metajax run directory "
                                    "(create one with `metajax train --workdir DIR`)")
        return cls.from_json(path.read_text())
