"""The input-gradient of a strided 3x3 convolution inside a meta-step, in three forms.

``"hybrid"`` (``metajax.models.conv``) computes a convolution's input-gradient, the correlation
of the output cotangent g dilated by the stride with the flipped kernel, with one function,
``conv._hybrid_input_grad``. This benchmark swaps it for each form below and times the whole
compiled meta-step side by side (``benchmarks/hybrid_forms.py``):

* ``lhs-dilation``: one convolution whose ``lhs_dilation`` is the stride (JAX's own transpose
  rule's form, and hybrid's until 2026-12-04);
* ``zero-interleaved``: g padded with ``stride - 1`` zeros between rows and columns
  (``lax.pad``'s interior padding), then a plain stride-1 convolution;
* ``unswapped``: hybrid's form now: ``zero-interleaved`` where g is smaller than the kernel
  (there XLA swaps the lhs-dilated convolution's operands into a layout off its Eigen path),
  ``lhs-dilation`` elsewhere.

A stride-1 convolution is the same in both, so only models with strided convolutions (the
Omniglot Conv4) can differ. It also prints the convolutions each compiled step holds that have
an ``lhs_dilate`` or run in a layout other than ``b01f_01io->b01f`` (XLA:CPU's Eigen layout).

    python benchmarks/input_grad.py --workloads omniglot-20w1s --algos maml,fomaml,anil \
        --host-allocator reuse
"""
from __future__ import annotations

import argparse
import collections
import re

import hybrid_forms  # beside this file
import metajax.models.conv as conv

FORMS = {"lhs-dilation": conv._lhs_dilated_input_grad,
         "zero-interleaved": conv._zero_interleaved_input_grad,
         "unswapped": conv._unswapped_input_grad}


def off_path_convolutions(hlo_text: str) -> dict:
    """How many convolutions in ``hlo_text`` have an lhs_dilate, and how many run in each layout
    other than Eigen's ``b01f_01io->b01f``."""
    dilated, layouts = 0, collections.Counter()
    for line in hlo_text.splitlines():
        match = re.search(r" convolution\(.*dim_labels=([^,\s]+)", line)
        if not match:
            continue
        dilated += "lhs_dilate" in line
        if match.group(1) != "b01f_01io->b01f":
            layouts[match.group(1)] += 1
    return {"lhs_dilate": dilated, "other_layouts": dict(layouts)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    hybrid_forms.add_arguments(parser, workloads="omniglot-20w1s", algos="maml,fomaml,anil")
    args = parser.parse_args(argv)
    hybrid_forms.configure(args)
    hybrid_forms.run("_hybrid_input_grad", FORMS, args, off_path_convolutions, "convolutions")

if __name__ == "__main__":
    main()
