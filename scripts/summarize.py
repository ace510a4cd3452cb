"""Print a Markdown row per metrics file: final and last-10-epoch mean test error, s/epoch.

    python scripts/summarize.py data_cache/results/mnist-2x500/*.json
"""
import json
import statistics
import sys
from pathlib import Path

print("| run | algo | labels | lr | epochs | final test error | mean of last 10 | best | s/epoch (train) |")
print("|---|---|---|---|---|---|---|---|---|")
for path in sys.argv[1:]:
    m = json.loads(Path(path).read_text())
    cfg, epochs = m["config"], m["epochs"]
    errors = [r["test_error"] for r in epochs if "test_error" in r]
    last = errors[-10:]
    secs = statistics.median(r["train_seconds"] for r in epochs)
    print(f"| {Path(path).stem} | {cfg['algo']} | {cfg['labels'] if cfg['algo'] != 'bp' else '-'} "
          f"| {cfg['lr']} | {len(epochs)} | {100 * errors[-1]:.2f}% | {100 * statistics.mean(last):.2f}% "
          f"| {100 * min(errors):.2f}% | {secs:.1f} |")
