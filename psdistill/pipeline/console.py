"""The short report a run prints last: what ran or was reused, and the headline figures."""
from __future__ import annotations

from psdistill.pipeline.config import PipelineConfig


def print_report(cfg: PipelineConfig, results: dict, out=print) -> None:
    """A short report: what ran or was reused, and the headline figures."""
    out("")
    out(f"psdistill run: {cfg.run_dir}")
    for name, marker in results.items():
        took = " (when it ran)" if marker["status"] == "reused" else ""  # a reused stage's marker keeps its time
        out(f"  {name:9s} {marker['status']:7s} {marker['seconds']:7.1f} s{took}")
    judge = results.get("judge", {}).get("summary")
    if judge:
        label = "  (SIMULATED judge: reads ground truth)" if judge["simulated"] else ""
        out(f"  judge: {judge['judge']}{label}")
        out(f"  {judge['images']} training images, {judge['references']} references, "
            f"{judge['judgments_per_image']} judgments per image, position bias {judge['position_bias']:+.2f} logit")
        if "judging" in judge:  # markers written before judge_stats.json existed lack it
            j = judge["judging"]
            saved = ""
            if j.get("prefix_tokens_saved"):  # none: a judge without prefix reuse, or a marker older than the counter
                per = j["prefix_tokens_saved_per_rank"]
                saved = f", prefix tokens saved {j['prefix_tokens_saved']}" + (
                    f" (per rank {min(per)}-{max(per)})" if len(per) > 1 else "")
            out(f"  judging: {j['ranks']} rank{'s' if j['ranks'] > 1 else ''}, utilization {j['utilization']:.2f}, "
                f"{j['pairs_per_s']:.1f} pairs/s{saved} (judge_stats.json)")
        models = {d: p["judge_model"] for d, p in judge["dimensions"].items() if "judge_model" in p}
        if models:  # markers written before the pool reported its model of the judge lack it
            out("  judge model: " + "; ".join((f"{d}: " if len(models) > 1 else "") + describe_judge_model(m)
                                             for d, m in models.items()))
        if len(judge["dimensions"]) > 1:
            out("  per dimension: " + ", ".join(f"{d} {p['judgments_per_image']} judgments per image"
                                                 for d, p in judge["dimensions"].items()))
    evaluation = results.get("evaluate", {}).get("summary")
    if evaluation:
        for line in evaluation["headline"]:
            out("  " + line)
        out(f"  report: {evaluation['files'].get('markdown', '')}")


def describe_judge_model(model: dict) -> str:
    """One phrase for `PoolResult.judge_model`."""
    if model["model"] == "step":
        return f"step, right {model['accuracy']:.0%} of the time however far apart"
    if model["model"] == "graded":
        noise, spread = model["noise_sd"], model["spread_sd"]
        ratio = f" (signal to noise {spread / noise:.3g})" if noise > 0 else ""
        return f"graded, answer logit = score gap + noise of sd {noise:.3g}; scores spread with sd {spread:.3g}{ratio}"
    return f"logistic, dispersion {model['dispersion']:.3g}"

