"""The stages of a run, one module each, in the order they run: data, judge, fit, distill, score, evaluate.

Each module holds `run(ctx: RunContext) -> dict` (a JSON-able summary, kept in the stage's marker)
and `STAGE`, its `psdistill.pipeline.runner.Stage`: which config sections decide its result, and
whether every process of a launch takes part.
"""
