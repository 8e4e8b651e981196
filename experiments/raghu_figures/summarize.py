"""Markdown tables of the curves written by experiments/raghu_figures/run.sh.

    python experiments/raghu_figures/summarize.py OUT/figures

Reads FIGURES/<run>/{freeze,similarity,weight_distance,rsa}.json (run: maml, multiclass) and prints
one table per figure: rows are checkpoints (training steps), columns layers or frozen blocks.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(figures: Path, run: str, study: str):
    path = figures / run / f"{study}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def freeze(figures: Path) -> str:
    result = _load(figures, "maml", "freeze")
    if result is None:
        return ""
    blocks, table = [], {}
    for row in (row for entry in result["by_step"] for row in entry["rows"]):
        if row["block"] not in blocks:
            blocks.append(row["block"])
        table.setdefault(row["checkpoint_step"], {})[row["block"]] = (
            f"{100 * row['accuracy']:.1f} ± {100 * row['ci95']:.1f}")
    rows = [[str(step)] + [cells.get(b, "") for b in blocks] for step, cells in sorted(table.items())]
    return _table(f"Raghu Fig 2 right: MAML test accuracy % (95% CI over {result['tasks']} tasks) "
                  "with conv layers frozen at test time", ["step"] + [f"frozen {b}" for b in blocks],
                  rows)


def similarity(figures: Path, run: str) -> str:
    result = _load(figures, run, "similarity")
    if result is None:
        return ""
    out = []
    for metric in result["metrics"]:
        rows = [[str(c["step"])] + [f"{c['similarity'][metric][layer]['mean']:.3f}"
                                    for layer in result["layers"]]
                for c in result["checkpoints"]]
        out.append(_table(f"Raghu Fig 2 left ({run}): {metric} of each layer before vs after "
                          f"{result['inner_steps']} inner steps ({result['tasks']} tasks)",
                          ["step"] + result["layers"], rows))
    return "\n".join(out)


def weight_distance(figures: Path, run: str) -> str:
    result = _load(figures, run, "weight_distance")
    if result is None:
        return ""
    rows = [[str(c["step"])] + [f"{c['layers'][layer]['relative']:.4f}"
                                for layer in result["layers"]]
            for c in result["checkpoints"]]
    return _table(f"Raghu Fig 5 ({run}): |W_adapted - W| / |W| per layer after "
                  f"{result['inner_steps']} inner steps (mean over {result['tasks']} tasks)",
                  ["step"] + result["layers"], rows)


def rsa(figures: Path) -> str:
    out = []
    for key, what in (("to_random_init", "Goerttler Fig 1a: RSA dissimilarity to the random "
                       "initialisation"), ("to_previous_checkpoint", "Goerttler Fig 1b: RSA "
                       "dissimilarity to the previous checkpoint")):
        rows, layers = [], None
        for run in ("maml", "multiclass"):
            result = _load(figures, run, "rsa")
            if result is None:
                continue
            layers = result["layers"]
            rows += [[run, str(c["step"])] + [f"{c['layers'][layer]['mean']:.3f}"
                                              for layer in layers] for c in result[key]]
        if rows:
            out.append(_table(f"{what} (MAML, and the multiclass run as the supervised control)",
                              ["run", "step"] + layers, rows))
    return "\n".join(out)


def main(argv) -> None:
    figures = Path(argv[0])
    parts = [freeze(figures), similarity(figures, "maml"),
             weight_distance(figures, "maml"), rsa(figures)]
    print("\n".join(p for p in parts if p))


if __name__ == "__main__":
    main(sys.argv[1:])
