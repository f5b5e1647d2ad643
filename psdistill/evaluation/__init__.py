"""Reports: metrics of scorers against ground truth, side by side, as JSON, markdown and plots.

    evaluate(records, predictions, dimensions=None, categories=None, held_out=()) -> EvalResult
    write_report(result, out_dir) -> {kind: path}
    cross_category_matrix(records, {train_category: predictions}, dimension) -> CrossCategoryMatrix
"""
from psdistill.evaluation.cross import CrossCategoryMatrix, cross_category_matrix
from psdistill.evaluation.report import EvalResult, evaluate, write_report

__all__ = ["CrossCategoryMatrix", "EvalResult", "cross_category_matrix", "evaluate", "write_report"]
