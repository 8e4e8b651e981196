"""Markdown tables of Raghu et al. (2020) Tables 3, 5 and 6 from the runs of raghu_table*/run.sh,
metajax's numbers beside the paper's.

    python experiments/raghu_tables.py table1|table5|table6|table3 OUT
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# Table 1 (Omniglot 20-way 1-shot, 3 seeds): (method, run folder, metajax --head, paper).
TABLE1 = [
    ("MAML", "maml", "learned", "93.7 ± 0.7"),
    ("ANIL", "anil", "learned", "96.2 ± 0.5"),
    ("NIL (the ANIL run, no head at test time)", "anil", "nil", "96.7 ± 0.3"),
    ("NIL on the MAML run (not in the table)", "maml", "nil", "-"),
]
# The paper's numbers (MiniImageNet 5-way 1-shot, 3 seeds; its Tables 5, 6 and 3).
TABLE5 = [  # (regime, head, run folder, metajax --head, paper mean +- sd)
    ("MAML training", "MAML head", "maml", "learned", "46.9 ± 0.2"),
    ("MAML training", "NIL head", "maml", "nil", "48.4 ± 0.3"),
    ("ANIL training", "ANIL head", "anil", "learned", "46.7 ± 0.4"),
    ("ANIL training", "NIL head", "anil", "nil", "48.0 ± 0.7"),
    ("Multiclass pretrain", "MAML head", "multiclass_head", "learned", "38.4 ± 0.8"),
    ("Multiclass pretrain", "NIL head", "multiclass_head", "nil", "39.7 ± 0.3"),
    ("Multitask pretrain", "MAML head", "multitask_head", "learned", "26.5 ± 0.8"),
    ("Multitask pretrain", "NIL head", "multitask_head", "nil", "26.5 ± 1.1"),
    ("Random features", "MAML head", "random_head", "learned", "32.1 ± 0.5"),
    ("Random features", "NIL head", "random_head", "nil", "32.9 ± 0.6"),
]
TABLE6 = [  # (pair, compare folder, paper CCA, paper CKA)
    ("(MAML, MAML)", "maml--maml", 0.51, 0.83),
    ("(Multiclass pretrain, MAML)", "multiclass_head--maml", 0.48, 0.79),
    ("(Random features, MAML)", "random_head--maml", 0.40, 0.72),
    ("(Multitask pretrain, MAML)", "multitask_head--maml", 0.28, 0.65),
]
TABLE3 = [
    ("MAML-MAML", "maml--maml", 0.51, 0.83),
    ("ANIL-ANIL", "anil--anil", 0.51, 0.86),
    ("ANIL-MAML", "anil--maml", 0.50, 0.83),
]


def _mean_sd(values) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _per_seed_accuracy(path: Path) -> list[float]:
    result = json.loads(path.read_text())
    if "per_seed" in result:
        return [100 * s["accuracy"] for s in result["per_seed"].values()]
    return [100 * result["accuracy"]]


def table1(out: Path) -> str:
    lines = ["| method | metajax: test accuracy % (mean ± sd over seeds) | seeds | "
             "paper (Omniglot 20w1s) |", "|---|---|---|---|"]
    for method, run, flag, paper in TABLE1:
        per_seed = _per_seed_accuracy(out / f"{run}.{flag}.eval.json")
        lines.append(f"| {method} | {_mean_sd(per_seed)} | {len(per_seed)} | {paper} |")
    return "\n".join(lines)


def table5(out: Path) -> str:
    lines = ["| training regime | head | metajax: test accuracy % (mean ± sd over seeds) | "
             "seeds | paper (MiniImageNet 5w1s) |", "|---|---|---|---|---|"]
    for regime, head, run, flag, paper in TABLE5:
        per_seed = _per_seed_accuracy(out / f"{run}.{flag}.eval.json")
        lines.append(f"| {regime} | {head} | {_mean_sd(per_seed)} | {len(per_seed)} | {paper} |")
    return "\n".join(lines)


def _similarities(out: Path, rows) -> str:
    lines = ["| pair | CCA (metajax) | CKA (metajax) | debiased CKA (metajax) | pairs | "
             "CCA (paper) | CKA (paper) |", "|---|---|---|---|---|---|---|"]
    for name, folder, paper_cca, paper_cka in rows:
        files = sorted((out / "compare" / folder).glob("*/compare.json"))
        values = {"cca": [], "cka": [], "cka_debiased": []}
        for path in files:
            similarity = json.loads(path.read_text())["similarity"]
            for metric in values:
                values[metric].append(similarity[metric]["body_mean"]["mean"])
        lines.append(f"| {name} | {_mean_sd(values['cca'])} | {_mean_sd(values['cka'])} | "
                     f"{_mean_sd(values['cka_debiased'])} | {len(files)} | {paper_cca:.2f} | "
                     f"{paper_cka:.2f} |")
    return "\n".join(lines)


def main(argv) -> None:
    table, out = argv[0], Path(argv[1])
    print({"table1": table1, "table5": table5, "table6": lambda o: _similarities(o, TABLE6),
           "table3": lambda o: _similarities(o, TABLE3)}[table](out))


if __name__ == "__main__":
    main(sys.argv[1:])
