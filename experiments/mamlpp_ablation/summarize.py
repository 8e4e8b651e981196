"""Prints the MAML++ ablation table (markdown) from the run.sh output folder.

Every row's main column normalises test queries with the query batch's statistics (the
reference code's evaluation); BNRS rows also show their running-statistics evaluation.
"""
import json
import sys
from pathlib import Path

LABELS = {"maml": "MAML", "msl": "+ MSL", "bnwb": "+ BNWB", "bnrs": "+ BNRS", "lslr": "+ LSLR",
          "da": "+ DA", "ca": "+ CA", "all": "MAML++ (all parts)"}


def _acc(path: Path) -> str:
    r = json.loads(path.read_text())
    return f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"


def main(out: Path) -> None:
    print("| variant | test acc, batch statistics (600 tasks, 95% CI) | "
          "running statistics (BNRS rows) | train wall time (s) |")
    print("|---|---|---|---|")
    for name, label in LABELS.items():
        default = out / f"{name}.eval.json"
        if not default.exists():
            continue
        # run.sh writes a batch-statistics evaluation beside the default one of BNRS runs only
        batch = out / f"{name}.batch.eval.json"
        main_cell, running = (_acc(batch), _acc(default)) if batch.exists() else (_acc(default), "")
        seconds = (out / f"{name}.time").read_text().strip()
        print(f"| {label} | {main_cell} | {running} | {seconds} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mamlpp_ablation"))
