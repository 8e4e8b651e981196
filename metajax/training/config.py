"""The run configuration: one frozen dataclass, saved as ``config.json`` in the workdir."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from pathlib import Path

OUTER_OPTIMIZERS = ("adam", "sgd")
META_LR_SCHEDULES = ("constant", "cosine")
# Fields of older config.json files that are now an algorithm's own options (Config.options).
_LEGACY_OPTIONS = {"mamlpp": ("msl", "msl_anneal_steps", "bnwb", "bnrs", "lslr"),
                   "reptile": ("inner_batch",)}
DATA_PLACEMENTS = ("auto", "device", "host")
EVAL_BN = ("batch", "running")
DTYPES = ("float32", "bfloat16")
MATMUL_PRECISIONS = ("default", "high", "highest")
TRAIN_PARTS = ("all", "head")
BN_PARAMS = ("scale-offset", "offset-only")  # = metajax.models.layers.BN_PARAMS (tested)


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
    dtype: str = "float32"          # compute dtype of forward passes: float32 | bfloat16
    matmul_precision: str = "highest"  # float32 matmuls on TPUs/GPUs: default | high | highest
    hidden: int | None = None       # filters / units; None: the paper's
    conv_impl: str = "patches"      # patches | auto (per algo/backend: hybrid on CPU) | xla | hybrid
    conv_library: str = "auto"      # XLA:CPU's kernels for native convolutions: auto | eigen | ynnpack
    head_input: str = "flatten"     # conv4: the head sees the flattened map | its spatial mean
    bn: str = "scale-offset"        # conv4: batch norm learns scale and offset | offset-only
    adapt_bn: bool = True           # the inner loop adapts batch norm's params (MAML's code: no)
    ways: int = 5
    shots: int = 10                 # K support examples per class (per task for regression)
    query: int = 10                 # query examples per class (per task for regression)
    meta_batch: int = 25
    batch_size: int = 64            # multiclass: class-labelled images per training batch
    inner_steps: int = 1
    eval_inner_steps: int = 10
    inner_lr: float = 0.01
    meta_lr: float = 1e-3
    outer_optimizer: str = "adam"   # adam | sgd (Reptile's theta += beta * mean(W - theta))
    meta_lr_schedule: str = "constant"  # constant | cosine (MAML++'s CA: cosine to min_meta_lr)
    min_meta_lr: float = 1e-5
    adam_b2: float = 0.999          # Adam's second-moment decay (MAML++ uses 0.99)
    # The algorithm's own options, declared by its factory's keyword arguments (e.g. MAML++'s
    # msl/bnwb/bnrs/lslr, Reptile's inner_batch); flags of the chosen --algo (--msl true).
    options: dict = dataclasses.field(default_factory=dict)
    da_steps: int = 0               # derivative-order annealing: first order for this many steps
    init_from: str | None = None    # a run folder or checkpoint file whose body starts this run
    train: str = "all"              # all | head (the body stays as initialised, in both loops)
    steps: int = 20000
    seed: int = 0
    seeds: str | None = None        # "0,1,2": independent runs of these seeds, trained as one program
    seed_chunk: int | None = None   # seeds vmapped at a time (0: all); None: 1 on CPU, all elsewhere
    shard_tasks: bool = True        # split the task batch over all devices when there are several
    task_chunk: int | None = None   # tasks vmapped at a time (0: all); None: 1 on CPU, all elsewhere
    unroll: bool = True             # unroll the inner-loop scan (fast on CPU, slower to compile)
    remat: bool = False             # recompute inner steps in the backward pass (memory flat in steps)
    host_allocator: str = "reuse"  # reuse (keep freed host memory) | system (the C library's defaults)
    log_every: int = 50
    eval_every: int = 1000
    eval_tasks: int = 100           # validation tasks per periodic evaluation
    eval_batch: int = 50            # tasks evaluated per compiled call
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = False       # also write metrics.csv's rows as TensorBoard event files
    # Meta-RL (metajax.rl): set env to train a policy instead of a few-shot model.
    env: str | None = None          # nav2d | halfcheetah-dir | halfcheetah-vel
    physics: str = "auto"           # HalfCheetah engine: auto (mjx on accelerators, else c) | c | mjx
    trajectories: int = 20          # trajectories per task, before and after adaptation
    horizon: int = 100
    gamma: float = 0.99
    gae_lambda: float = 1.0
    max_kl: float = 0.01            # TRPO outer step: trust region, CG, backtracking line search
    cg_iters: int = 10
    cg_damping: float = 1e-5
    ls_steps: int = 15
    ls_ratio: float = 0.8

    def __post_init__(self):
        if isinstance(self.seeds, (list, tuple)):  # seeds=(0, 1, 2) from Python: stored as "0,1,2"
            object.__setattr__(self, "seeds", ",".join(str(int(s)) for s in self.seeds))

    def replace(self, **changes) -> "Config":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def validate(self) -> "Config":
        """Raises ValueError with the fix for settings that cannot work."""
        problems = []
        for name in ("shots", "query", "meta_batch", "batch_size", "steps", "eval_tasks",
                     "eval_batch",
                     "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("inner_steps", "eval_inner_steps"):
            if getattr(self, name) < 0:
                problems.append(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        for name in ("meta_lr", "inner_lr", "min_meta_lr"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0 or (value == 0 and name == "meta_lr"):
                problems.append(f"--{name.replace('_', '-')} must be a finite rate > 0, got "
                                f"{value} (a negative rate ascends the loss)")
        if self.outer_optimizer not in OUTER_OPTIMIZERS:
            problems.append(f"unknown --outer-optimizer {self.outer_optimizer!r}; choose one of: "
                            f"{', '.join(OUTER_OPTIMIZERS)}")
        if self.meta_lr_schedule not in META_LR_SCHEDULES:
            problems.append(f"unknown --meta-lr-schedule {self.meta_lr_schedule!r}; choose one "
                            f"of: {', '.join(META_LR_SCHEDULES)}")
        if self.da_steps < 0:
            problems.append(f"--da-steps must be >= 0, got {self.da_steps}")
        if self.head_input not in ("flatten", "pool"):
            problems.append(f"unknown --head-input {self.head_input!r}; choose one of: flatten, "
                            "pool")
        if self.bn not in BN_PARAMS:
            problems.append(f"unknown --bn {self.bn!r}; choose one of: {', '.join(BN_PARAMS)}")
        if not 0.0 <= self.adam_b2 < 1.0:
            problems.append(f"--adam-b2 must be in [0, 1), got {self.adam_b2}")
        if self.train not in TRAIN_PARTS:
            problems.append(f"unknown --train {self.train!r}; choose one of: "
                            f"{', '.join(TRAIN_PARTS)}")
        if self.seed_chunk is not None and self.seed_chunk < 0:
            problems.append(f"--seed-chunk must be >= 0 (0: every seed at once), got "
                            f"{self.seed_chunk}")
        if self.seeds is not None:
            problems += _seeds_problems(self.seeds, rl=self.env is not None)
        if self.task_chunk is not None and self.task_chunk < 0:
            problems.append(f"--task-chunk must be >= 0 (0: the whole meta-batch at once), got "
                            f"{self.task_chunk}")
        from metajax.models.conv import CONV_LIBRARIES  # noqa: PLC0415 - the config stays jax-free
        if self.conv_library not in ("auto", *CONV_LIBRARIES):
            problems.append(f"unknown --conv-library {self.conv_library!r}; choose one of: "
                            f"auto, {', '.join(CONV_LIBRARIES)}")
        from metajax.training.host_memory import HOST_ALLOCATORS  # noqa: PLC0415
        if self.host_allocator not in HOST_ALLOCATORS:
            problems.append(f"unknown --host-allocator {self.host_allocator!r}; choose one of: "
                            f"{', '.join(HOST_ALLOCATORS)}")
        if self.data_on not in DATA_PLACEMENTS:
            problems.append(f"unknown --data-on {self.data_on!r}; choose one of: "
                            f"{', '.join(DATA_PLACEMENTS)}")
        if self.dtype not in DTYPES:
            problems.append(f"unknown --dtype {self.dtype!r}; choose one of: {', '.join(DTYPES)}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            problems.append(f"unknown --matmul-precision {self.matmul_precision!r}; choose one "
                            f"of: {', '.join(MATMUL_PRECISIONS)}")
        if self.eval_bn not in EVAL_BN:
            problems.append(f"unknown --eval-bn {self.eval_bn!r}; choose one of: "
                            f"{', '.join(EVAL_BN)}")
        if self.image_size is not None and self.image_size < 1:
            problems.append(f"--image-size must be >= 1, got {self.image_size}")
        if self.env is None:
            problems += self._algorithm_problems()
        if self.dataset != "sinusoid" and self.ways < 2:
            problems.append(f"--ways must be >= 2 for classification, got {self.ways}")
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))
        return self

    def _algorithm_problems(self) -> list[str]:
        """What the chosen algorithm's factory declares it cannot take."""
        from metajax.algorithms.base import declared_options, supports
        from metajax.algorithms.registry import get_factory

        factory = get_factory(self.algo)
        declared = declared_options(factory)
        problems = []
        if not isinstance(self.options, dict):
            return [f"options must be a dict of the algorithm's options, got {self.options!r}"]
        unknown = [k for k in self.options if k not in declared]
        if unknown:
            takes = ", ".join(f"--{k.replace('_', '-')}" for k in declared) or "none"
            problems.append(f"{', '.join('--' + k.replace('_', '-') for k in unknown)} "
                            f"{'is not an option' if len(unknown) == 1 else 'are not options'} "
                            f"of --algo {self.algo} (its options: {takes})")
        if self.remat and not supports(factory, "remat"):
            problems.append(f"--remat true needs an algorithm that differentiates through its "
                            f"inner loop (its factory takes remat=); {self.algo} does not")
        if self.train == "head" and not (supports(factory, "mask")
                                         or getattr(factory, "adapts_head_only", False)):
            problems.append(f"--train head needs an algorithm whose inner loop can be limited to "
                            f"the head (its factory takes mask=, or adapts only the head, like "
                            f"anil); {self.algo} does not")
        if not self.adapt_bn and not (supports(factory, "mask")
                                      or getattr(factory, "adapts_head_only", False)):
            problems.append(f"--adapt-bn false needs an algorithm whose inner loop adapts a chosen "
                            f"part of the model (its factory takes mask=); {self.algo} does not")
        if self.da_steps and not supports(factory, "first_order"):
            problems.append(f"--da-steps needs an algorithm with a first-order variant (its "
                            f"factory takes first_order=); {self.algo} does not")
        return problems

    def algorithm_options(self) -> dict:
        """Keyword arguments of the algorithm's factory beyond the common ones."""
        return {**self.options, **({"remat": True} if self.remat else {})}

    def seed_list(self) -> tuple[int, ...] | None:
        """The seeds of a several-seed run (``--seeds 0,1,2``), or ``None`` for one seed."""
        if self.seeds is None:
            return None
        return tuple(int(part) for part in str(self.seeds).split(","))

    def for_seed(self, seed: int) -> "Config":
        """The configuration of one seed of a several-seed run: the single-seed run it equals."""
        return self.replace(seed=seed, seeds=None, seed_chunk=None)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, source: str = "config") -> "Config":
        """Parses and type-checks a saved config; errors name ``source`` and the field."""
        try:
            values = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{source} is not valid JSON ({e}); restore it or start a new "
                             "--workdir") from None
        if not isinstance(values, dict):
            raise ValueError(f"{source} must hold a JSON object of config fields, got "
                             f"{type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        # Older runs kept MAML++'s and Reptile's options as fields: they become options.
        legacy = {k: values[k] for k in _LEGACY_OPTIONS.get(values.get("algo"), ()) if k in values}
        if legacy:
            values["options"] = {**legacy, **values.get("options", {})}
        values = {k: v for k, v in values.items() if k in known}
        hints = typing.get_type_hints(cls)
        problems = [problem for name, value in values.items()
                    if (problem := _type_problem(name, value, hints[name]))]
        if problems:
            raise ValueError(f"{source}: " + "; ".join(problems))
        return cls(**values)

    def save(self, workdir: Path) -> None:
        from metajax.training.checkpoint import write_atomically

        write_atomically(Path(workdir) / "config.json", self.to_json().encode())

    @classmethod
    def load(cls, workdir: Path) -> "Config":
        path = Path(workdir) / "config.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: {workdir} is not a metajax run directory "
                                    "(create one with `metajax train --workdir DIR`)")
        return cls.from_json(path.read_text(), source=str(path)).validate_in(path)

    def validate_in(self, path) -> "Config":
        """:meth:`validate`, with errors naming the file the config came from."""
        try:
            return self.validate()
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _seeds_problems(seeds: str, *, rl: bool) -> list[str]:
    """What is wrong with a ``--seeds`` value (``[]`` if nothing)."""
    try:
        values = [int(part) for part in str(seeds).split(",")]
    except ValueError:
        return [f"--seeds {seeds!r}: expected comma-separated integers, e.g. --seeds 0,1,2"]
    problems = []
    if any(v < 0 for v in values):
        problems.append(f"--seeds {seeds}: seeds must be >= 0")
    if len(set(values)) != len(values):
        problems.append(f"--seeds {seeds}: each seed once (a repeated seed repeats its run)")
    if rl:
        problems.append("--seeds trains few-shot runs; meta-RL (--env) trains one seed per run: "
                        "start one run per --seed")
    return problems


def _type_problem(name: str, value, hint) -> str | None:
    """Why ``value`` does not fit the field's type (``None`` if it does)."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in allowed:
        if kind is type(None) and value is None:
            return None
        if kind is bool and isinstance(value, bool):
            return None
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return None
        if kind in (str, dict) and isinstance(value, kind):
            return None
    names = " or ".join("null" if k is type(None) else k.__name__ for k in allowed)
    return f"field {name!r} must be {names}, got {json.dumps(value)}"
# Help and group of every field, for `metajax train --help` (importable without JAX).
FIELD_HELP = {
    "dataset": ("data", 'sinusoid | omniglot | miniimagenet | cifar-fs | fc100 | folder'),
    "data_dir": ("data", 'None: $METAJAX_DATA_DIR'),
    "source": ("data", 'files (original archives) | tfds (prepared TFDS data)'),
    "image_size": ("data", 'folder: resize images to this size (None: keep, all equal)'),
    "data_on": ("data", 'device | host (episodes drawn on the host, prefetched) | auto'),
    "ways": ("data", 'N: classes per task'),
    "shots": ("data", 'K support examples per class (per task for regression)'),
    "query": ("data", 'query examples per class (per task for regression)'),
    "model": ("model", 'conv4 | conv4-pool | resnet12 | mlp | package.module:factory'),
    "head": ("model", 'the model\'s head, a params path (None: "head", or last Dense)'),
    "hidden": ("model", "filters / units; None: the paper's"),
    "conv_impl": ("model", 'auto (the fastest measured for the algo on this backend: '
                           'metajax.models.conv.default_conv_impl) | patches | xla | hybrid'),
    "conv_library": ("model", 'XLA:CPU runs native convolutions (hybrid, xla, stock flax Conv) '
                              'with: auto (the fastest measured: metajax.models.conv.'
                              'compiler_options) | eigen | ynnpack'),
    "head_input": ("model", "conv4 models: flatten (the conv4 map) | pool (its spatial mean, "
                            "MAML's reference Omniglot model)"),
    "bn": ("model", "conv4 models' batch norm learns: scale-offset | offset-only (MAML's "
                    "reference code)"),
    "adapt_bn": ("algorithm", "the inner loop adapts batch norm's params (false: they are "
                              "learned in the outer loop only, as in MAML's reference code)"),
    "eval_bn": ("model", 'stock BatchNorm at evaluation: batch | running statistics'),
    "dtype": ("model", 'compute dtype of forward passes: float32 | bfloat16'),
    "matmul_precision": ("model", 'float32 matmuls on TPUs/GPUs: default | high | highest'),
    "algo": ("algorithm", 'a name (metajax train --help) or package.module:factory'),
    "inner_steps": ("algorithm", 'inner SGD steps in meta-training'),
    "eval_inner_steps": ("algorithm", 'inner steps at validation and test time'),
    "inner_lr": ("algorithm", 'inner SGD step size (alpha)'),
    "da_steps": ("algorithm", 'derivative-order annealing: first order for this many steps'),
    "init_from": ("model", "a run folder or one of its checkpoint files: this run starts from "
                           "its body (the head is new); 'random': a random body"),
    "train": ("algorithm", "all | head: head trains only a head on the body it starts from "
                           "(frozen in the inner and the outer loop; Raghu et al. Table 5)"),
    "unroll": ("algorithm", 'unroll the inner-loop scan (fast on CPU, slower to compile)'),
    "remat": ("algorithm", 'recompute inner steps in the backward pass (memory flat in steps)'),
    "meta_batch": ("training", 'tasks per meta-step (a multiple of the device count)'),
    "batch_size": ("training", "--algo multiclass: class-labelled images per training batch "
                               "(each of the meta-batch's tasks is one such batch)"),
    "meta_lr": ("training", "outer optimiser's rate (beta)"),
    "outer_optimizer": ("training", "adam | sgd (Reptile's theta += beta * mean(W - theta))"),
    "meta_lr_schedule": ("training", "constant | cosine (MAML++'s CA: cosine to min_meta_lr)"),
    "min_meta_lr": ("training", "the cosine schedule's final rate"),
    "adam_b2": ("training", "Adam's second-moment decay (MAML++ uses 0.99)"),
    "steps": ("training", 'meta-steps to train (a resumed run may raise it)'),
    "seed": ("training", 'initialisation, task stream and dropout keys'),
    "seeds": ("training", 'e.g. 0,1,2: train these seeds as one program, each in WORKDIR/seed_S '
                          '(each equal to its own --seed run); eval reports mean +- sd'),
    "seed_chunk": ("training", 'seeds vmapped at a time (0: all); None: 1 on CPU, all elsewhere'),
    "shard_tasks": ("training", 'split the task batch over all devices when there are several'),
    "task_chunk": ("training", 'tasks vmapped at a time (0: all); None: 1 on CPU, all elsewhere'),
    "host_allocator": ("training", 'reuse (keep freed host memory and run single-device '
                                   'computations on the calling thread, so XLA:CPU\'s buffers are '
                                   'not page-faulted in on every step: '
                                   'metajax.training.host_memory) | system (the C library\'s and '
                                   'JAX\'s defaults)'),
    "log_every": ("training", 'steps between logged training metrics'),
    "eval_every": ("training", 'steps between validations'),
    "eval_tasks": ("training", 'validation tasks per periodic evaluation'),
    "eval_batch": ("training", 'tasks evaluated per compiled call'),
    "checkpoint_every": ("training", 'steps between checkpoints'),
    "keep_checkpoints": ("training", 'newest checkpoints kept'),
    "tensorboard": ("training", "also write metrics.csv's rows as TensorBoard event files in "
                                "WORKDIR/tensorboard/ (pip install 'metajax[tensorboard]')"),
    "env": ("meta-RL", 'nav2d | halfcheetah-dir | halfcheetah-vel'),
    "physics": ("meta-RL", 'HalfCheetah engine: auto (mjx on GPUs/TPUs, c on CPUs) | c (MuJoCo '
                           'via pure_callback) | mjx (MuJoCo XLA)'),
    "trajectories": ("meta-RL", 'trajectories per task, before and after adaptation'),
    "horizon": ("meta-RL", 'time steps per trajectory'),
    "gamma": ("meta-RL", 'discount'),
    "gae_lambda": ("meta-RL", 'GAE lambda'),
    "max_kl": ("meta-RL", 'TRPO outer step: trust region, CG, backtracking line search'),
    "cg_iters": ("meta-RL", 'conjugate-gradient iterations'),
    "cg_damping": ("meta-RL", 'CG damping'),
    "ls_steps": ("meta-RL", 'line-search steps'),
    "ls_ratio": ("meta-RL", 'line-search shrink factor'),
}
