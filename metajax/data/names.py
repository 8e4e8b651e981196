"""Dataset names, importable without JAX (the CLI's choices)."""

VERIFIABLE = ("omniglot", "miniimagenet", "cifar-fs", "fc100", "folder")
BENCHMARKS = ("omniglot-runs",)  # metajax eval --benchmark (metajax.training.benchmarks)
ALGORITHM_NAMES = ("maml", "fomaml", "anil", "boil", "reptile", "metasgd", "mamlpp", "multitask",
                   "pretrain", "multiclass", "protonets", "protomaml")  # metajax.algorithms.registry.ALGORITHMS (tested)
