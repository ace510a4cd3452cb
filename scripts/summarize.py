"""Print a Markdown row per metrics file: final and last-10-evaluation mean test error,
validation error where the run held images out, epochs run, s/epoch.

    python scripts/summarize.py data_cache/results/sweep-mnist-symba-10ep/*.json
"""
import json
import statistics
import sys
from pathlib import Path

LAST = 10  # evaluations averaged: single epochs swing by several tenths of a point


def row(path):
    m = json.loads(Path(path).read_text())
    cfg, epochs = m["config"], m["epochs"]
    evaluated = [r for r in epochs if "test_error" in r]
    labels = cfg["labels"] if cfg["algo"] != "bp" else "-"
    head = f"| {Path(path).stem} | {cfg['algo']} | {labels} | {cfg['lr']} "
    if not evaluated:
        return head + f"| {len(epochs)}/{cfg['epochs']} | not evaluated yet | | | | |"
    errors = [r["test_error"] for r in evaluated]
    val = evaluated[-1].get("val_error")
    secs = statistics.median(r["train_seconds"] for r in epochs)
    return (head + f"| {len(epochs)}/{cfg['epochs']} | {100 * errors[-1]:.2f}% "
            f"| {100 * statistics.mean(errors[-LAST:]):.2f}% | {100 * min(errors):.2f}% "
            f"| {'-' if val is None else f'{100 * val:.2f}%'} | {secs:.1f} |")


print(f"| run | algo | labels | lr | epochs | final test error | mean of last {LAST} | best "
      "| validation error | s/epoch (train) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    print(row(path))
