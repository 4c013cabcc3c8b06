"""The PNG of a run's curves: training loss and dev F1 per evaluation, from metrics.jsonl."""
from __future__ import annotations

import json


def plot_curves(metrics_path: str, png_path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps, losses, ev = [], [], []
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if "loss" in r:
                steps.append(r["step"])
                losses.append(r["loss"])
            if "dev_entity_f1" in r:
                ev.append((r["step"], r["dev_entity_f1"], r["dev_relation_f1"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="tab:gray", label="train loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    if ev:
        ax2.plot([s for s, _, _ in ev], [e for _, e, _ in ev], "o-", color="tab:blue", label="dev entity F1")
        ax2.plot([s for s, _, _ in ev], [r for _, _, r in ev], "s-", color="tab:orange", label="dev relation F1")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("F1 (strict)")
    fig.legend(loc="upper center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
