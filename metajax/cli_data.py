"""The dataset parts of the ``metajax`` command, registered by :mod:`metajax.cli`.

    metajax data verify --dataset NAME --data-dir DIR     # JSON summary; exit 2 on bad data
    metajax data verify --dataset folder --data-dir ROOT [--image-size N]
    metajax eval DIR --benchmark omniglot-runs [--head nil|zero|learned]
"""
from __future__ import annotations

import argparse

from metajax.data.names import BENCHMARKS, VERIFIABLE

__all__ = ["add_benchmark_flags", "add_data_command", "run_benchmark", "run_data_command"]


def add_data_command(sub: argparse._SubParsersAction) -> None:
    """Adds ``metajax data verify`` to the command's subparsers."""
    data = sub.add_parser("data", help="check dataset files")
    actions = data.add_subparsers(dest="data_command", required=True)
    verify = actions.add_parser(
        "verify", help="check a dataset's files end to end; prints a JSON summary",
        description="Checks archives, split files and every image, prints a JSON summary "
                    "(classes and images per split, image shape, checksums) and exits with "
                    "status 2 and the fix on a missing, truncated or corrupt file, a split file "
                    "naming absent images, or overlapping splits. --dataset folder reads any "
                    "images laid out as ROOT/{train,val,test}/<class>/<image> (.png/.jpg/.jpeg; "
                    "any number of images per class).")
    verify.add_argument("--dataset", required=True, choices=VERIFIABLE)
    verify.add_argument("--data-dir", default=None,
                        help="the dataset's folder or its parent (default: $METAJAX_DATA_DIR); "
                             "for --dataset folder, the folder holding train/, val/ and test/")
    verify.add_argument("--image-size", type=int, default=None, metavar="N",
                        help="--dataset folder only: resize every image to NxN (needed when "
                             "the images differ in size)")


def run_data_command(args: argparse.Namespace) -> dict:
    """Runs a ``metajax data`` subcommand; returns its JSON-ready result.

    Raises:
      DataError: the data failed a check (the CLI prints the message and exits with status 2).
    """
    from metajax.data.verify import verify_dataset

    return verify_dataset(args.dataset, args.data_dir,
                          image_size=getattr(args, "image_size", None))


def add_benchmark_flags(ev: argparse.ArgumentParser) -> None:
    """Adds ``--benchmark`` to ``metajax eval``."""
    ev.add_argument("--benchmark", default=None, choices=BENCHMARKS,
                    help="score on a fixed benchmark instead of sampled tasks: omniglot-runs is "
                         "Lake et al.'s 20 runs of 20-way one-shot (all_runs.zip beside the "
                         "run's Omniglot zips or in --data-dir); a run trained with other than "
                         "20 ways needs --head nil or --head zero")


def run_benchmark(args: argparse.Namespace) -> dict:
    """``metajax eval DIR --benchmark NAME``: the benchmark's JSON-ready result."""
    from metajax.training.benchmarks import evaluate_omniglot_runs

    if args.freeze.strip():
        raise ValueError("--freeze is not supported with --benchmark; drop one of them")
    return evaluate_omniglot_runs(args.workdir, inner_steps=args.inner_steps, head=args.head,
                                  data_dir=args.data_dir)

