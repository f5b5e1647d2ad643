"""`psdistill score` / `score_images`: written as it goes, resumed after a kill, bad images skipped on
request, globs expanded; on the real tiny teacher scorer (the base VLM read zero-shot)."""
import csv

import numpy as np
import pytest
from PIL import Image

from psdistill.cli import main
from psdistill.distill import score_images
from psdistill.scoring.teacher import teacher_pointwise
from psdistill.core.errors import DataError


class Counting:
    """The real scorer, recording which images it was asked to score."""

    def __init__(self, scorer):
        self.scorer, self.asked = scorer, []
        self.name, self.dimensions, self.identity = scorer.name, scorer.dimensions, scorer.identity

    def score(self, paths, batch_size=16):
        self.asked += [str(p) for p in paths]
        return self.scorer.score(paths, batch_size=batch_size)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for n in range(6):
        path = root / f"im{n}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def teacher():
    return teacher_pointwise("tiny")


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_killed_scoring_resumes_with_only_the_missing_images(images, teacher, tmp_path):
    whole = score_images(teacher, images, tmp_path / "whole.csv", batch_size=2)
    out = tmp_path / "scores.csv"
    score_images(teacher, [], out)  # the killed run had claimed the file for this scorer first
    out.unlink()
    # What a run killed after two batches leaves: four scored rows and a row cut off mid-write.
    (tmp_path / "scores.csv.partial").write_text(
        "".join(f"{p},{float(v)!r}\n" for p, v in zip(images[:4], whole[:4])) + f"{images[4]},0.12")
    counting = Counting(teacher)
    resumed = score_images(counting, images, out, batch_size=2)
    assert counting.asked == [str(p) for p in images[4:]]  # the torn row is scored again
    np.testing.assert_allclose(resumed, whole, atol=1e-6)
    assert [r["id"] for r in _rows(out)] == [p.stem for p in images]
    assert not (tmp_path / "scores.csv.partial").exists()
    again = Counting(teacher)
    score_images(again, images, out, batch_size=2)  # everything is in the finished file
    assert again.asked == []


def test_bad_images_stop_the_run_or_are_skipped(images, teacher, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    mixed = images[:2] + [bad] + images[2:3]
    with pytest.raises(DataError, match="broken.png"):
        score_images(teacher, mixed, tmp_path / "a.csv", batch_size=4)
    scores = score_images(teacher, mixed, tmp_path / "b.csv", batch_size=4, on_bad_image="skip")
    good = score_images(teacher, images[:3], tmp_path / "c.csv", batch_size=4)
    assert np.isnan(scores[2])
    np.testing.assert_allclose(scores[[0, 1, 3]], good, atol=1e-6)


def test_score_command_expands_a_quoted_glob(images, tmp_path, capsys):
    out = tmp_path / "glob.csv"
    assert main(["score", "--model", "teacher-pointwise", str(images[0].parent / "im[0-2].png"), "-o", str(out)]) == 0
    assert [r["id"] for r in _rows(out)] == ["im0", "im1", "im2"]
    assert f"wrote 3 scores to {out}" in capsys.readouterr().out


def test_scores_of_another_scorer_are_never_resumed_and_nan_rows_are_retried(images, teacher, tmp_path):
    from psdistill.core.errors import ConfigError

    out = tmp_path / "scores.csv"
    first = score_images(teacher, images[:3], out)
    # The same base model read after another prompt is another scorer: its rows must not come back.
    other = teacher_pointwise("tiny", prompt="How beautiful is this picture? Answer with one word.")
    with pytest.raises(ConfigError, match=r"scores.csv: holds scores of scorer 'teacher-pointwise' with other "
                                          r"weights or settings.*--overwrite"):
        score_images(other, images[:3], out)
    counting = Counting(other)
    replaced = score_images(counting, images[:3], out, overwrite=True)
    assert counting.asked == [str(p) for p in images[:3]]
    np.testing.assert_allclose(replaced, other.score(images[:3]), atol=1e-6)
    assert not np.allclose(replaced, first)
    # A NaN (an image that failed) is scored again on the next call; the others are kept.
    rows = _rows(out)
    rows[1]["overall"] = "nan"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    again = Counting(other)
    np.testing.assert_allclose(score_images(again, images[:3], out), replaced, atol=1e-6)
    assert again.asked == [str(images[1])]
