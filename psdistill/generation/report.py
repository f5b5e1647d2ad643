"""A reward fine-tuning run's record: metrics.jsonl (one row per step; the held-out columns on evaluation
steps), the plot of the reward rising beside the second scorer and the diversity, and the summary lines."""
from __future__ import annotations

import json
from pathlib import Path

METRICS = "metrics.jsonl"
PLOT = "reward_curve.png"
HELDOUT = ("heldout_reward", "heldout_second", "heldout_diversity")


class MetricsLog:
    """metrics.jsonl, trimmed on resume to the rows up to the checkpoint's step (later ones are recomputed)."""

    def __init__(self, run_dir: str | Path, upto: int):
        self.path = Path(run_dir) / METRICS
        self.rows = [r for r in read_metrics(run_dir) if r["step"] <= upto]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in self.rows))

    def write(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def first(self, key: str):
        return next((r[key] for r in self.rows if r.get(key) is not None), None)


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot(run_dir: str | Path, reward_name: str, second_name: str | None) -> Path:
    """Held-out reward (and the training batches') by step; the second scorer and diversity below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    ev = [r for r in rows if "heldout_reward" in r]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    train = [r for r in rows if "reward" in r]
    top.plot([r["step"] for r in train], [r["reward"] for r in train], color="0.7", label="training batch")
    top.plot([r["step"] for r in ev], [r["heldout_reward"] for r in ev], "o-", label="held-out seeds")
    top.set_ylabel(f"reward ({reward_name})")
    top.legend()
    if second_name and any(r.get("heldout_second") is not None for r in ev):
        bottom.plot([r["step"] for r in ev], [r["heldout_second"] for r in ev], "s-", color="C1",
                    label=f"second scorer ({second_name})")
        bottom.set_ylabel("second scorer")
        bottom.legend(loc="upper left")
    div = bottom.twinx()
    div.plot([r["step"] for r in ev], [r["heldout_diversity"] for r in ev], "^--", color="C2", label="diversity")
    div.set_ylabel("diversity (RMS pixel distance)")
    div.legend(loc="upper right")
    bottom.set_xlabel("step")
    fig.tight_layout()
    path = Path(run_dir) / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_lines(run_dir: str | Path, reward_name: str, second_name: str | None) -> list[str]:
    ev = [r for r in read_metrics(run_dir) if "heldout_reward" in r]
    if not ev:
        return []
    a, b = ev[0], ev[-1]
    lines = [f"held-out reward ({reward_name}): {a['heldout_reward']:.3f} -> {b['heldout_reward']:.3f} "
             f"(step {a['step']} -> {b['step']})"]
    if second_name and b.get("heldout_second") is not None:
        lines.append(f"second scorer ({second_name}): {a['heldout_second']:.3f} -> {b['heldout_second']:.3f}")
    lines.append(f"diversity: {a['heldout_diversity']:.4f} -> {b['heldout_diversity']:.4f}")
    return lines
