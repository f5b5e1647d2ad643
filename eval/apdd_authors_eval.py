"""The APDDv2 authors' evaluation, transcribed from their code for checking ours (no psdistill import).

Source: github.com/BestiVictory/APDDv2 at commit 3ff08cd: `dataset.py` (class AVA: the split CSV read
with encoding ISO-8859-1, rows without a Score dropped, y = Score as float32) and `eval.py`
(`validate`: sklearn's mean_squared_error, spearmanr, mean absolute error printed as "WASD",
pearsonr(pred, true), and ACC = accuracy_score of the labels 0 for a score <= 5.0, 1 above). The
model's output for an image is replaced by a given prediction; rows whose image has none are left
out (their eval scores every row). sklearn is not a dependency here: its two functions are the means
written below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr


def authors_eval(split_csv: str | Path, predictions: Mapping[str, float], dtype=np.float32) -> dict:
    """{n, srcc, plcc, mse, mae, acc} of `predictions` ({image id = file name without suffix: Score-scale
    prediction}) on `split_csv`; `dtype` float32 as in their code, float64 to compare exactly."""
    df = pd.read_csv(split_csv, encoding="ISO-8859-1")
    df = df.dropna(subset=["Score"])
    ids = df["filename"].astype(str).str.strip().map(lambda name: Path(name).stem)
    df = df[ids.isin(list(predictions))]
    ids = ids[df.index]
    y_true = df["Score"].to_numpy().astype(dtype)
    y_pred = np.array([predictions[i] for i in ids], dtype=dtype)
    mse = np.mean((y_true - y_pred) ** 2)  # sklearn.metrics.mean_squared_error(total_true, total_pred)
    srocc, _ = spearmanr(y_true, y_pred)
    wasd = np.mean(np.abs(y_true - y_pred))
    plcc = pearsonr(y_pred, y_true)[0]
    threshold = 5.0
    true_label = np.where(y_true <= threshold, 0, 1)
    pred_label = np.where(y_pred <= threshold, 0, 1)
    acc = np.mean(true_label == pred_label)  # sklearn.metrics.accuracy_score(true_label, pred_label)
    return {"n": len(df), "srcc": float(srocc), "plcc": float(plcc), "mse": float(mse), "mae": float(wasd),
            "acc": float(acc)}
