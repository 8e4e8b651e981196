"""Prints the MAML++ ablation table (markdown) from the run.sh output folder."""
import json
import sys
from pathlib import Path

LABELS = {"maml": "MAML", "msl": "+ MSL", "bnwb": "+ BNWB", "bnrs": "+ BNRS", "lslr": "+ LSLR",
          "da": "+ DA", "ca": "+ CA", "all": "MAML++ (all parts)"}


def main(out: Path) -> None:
    print("| variant | test acc (600 tasks, 95% CI) | train wall time (s) |")
    print("|---|---|---|")
    for name, label in LABELS.items():
        result = out / f"{name}.eval.json"
        if not result.exists():
            continue
        r = json.loads(result.read_text())
        seconds = (out / f"{name}.time").read_text().strip()
        print(f"| {label} | {100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f} | {seconds} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/mamlpp_ablation"))
