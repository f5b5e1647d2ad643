"""psdistill.load_scorer: one call on a path, a PIL image, an array or a list, against `score` on the
same files; the `psdistill score` command through it; `--help` listing the config fields."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import psdistill
from make_tiny_run import make_tiny_run
from psdistill.cli import main
from psdistill.data.predictions import read_predictions
from psdistill.distill import DistillConfig, StudentScorer
from psdistill.core.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = make_tiny_run(tmp_path_factory.mktemp("tiny_run"))
    return out, sorted(str(p) for p in (out / "images").glob("*.png"))


def test_load_scorer_is_callable_on_every_input_kind(run):
    run_dir, paths = run
    reference = StudentScorer.from_pretrained(run_dir / "student").score(paths)
    assert np.ptp(reference) > 0  # distinct scores, so a mixed-up order would show
    scorer = psdistill.load_scorer(run_dir)
    assert scorer.score_range == (1.0, 5.0) and scorer.lower_better is False
    assert scorer.dimensions == ("overall",) and scorer.device.type == "cpu"
    pils = [Image.open(p) for p in paths]  # PNG "RGB" as written, converted by the scorer
    arrays = [np.asarray(im.convert("RGB")) for im in pils]
    one = scorer(paths[1])
    assert isinstance(one, float) and one == pytest.approx(reference[1], abs=1e-5)
    assert scorer(Path(paths[1])) == pytest.approx(reference[1], abs=1e-5)
    assert scorer(pils[2]) == pytest.approx(reference[2], abs=1e-5)
    assert scorer(arrays[3]) == pytest.approx(reference[3], abs=1e-5)
    mixed = [paths[0], pils[1], arrays[2], *paths[3:]]
    np.testing.assert_allclose(scorer(mixed), reference, atol=1e-5)
    # score() takes a single path as one image (not its characters) and still returns an array
    np.testing.assert_allclose(scorer.score(paths[0]), reference[:1], atol=1e-5)
    # the student folder and the registry name give the same scorer
    np.testing.assert_allclose(psdistill.load_scorer(run_dir / "student")(paths), reference, atol=1e-5)
    np.testing.assert_allclose(psdistill.load_scorer("psdistill", path=str(run_dir))(paths), reference, atol=1e-5)
    with pytest.raises(DataError, match=r"image 1: a numpy image must be HxWx3 uint8.*float64"):
        scorer([arrays[0], arrays[1].astype(float)])
    with pytest.raises(DataError, match="image 0: expected a path, a PIL image"):
        scorer([3])


def test_load_scorer_names_what_it_cannot_load(tmp_path):
    with pytest.raises(ConfigError, match="psdistil: neither a registered scorer .*psdistill.* nor an existing path"):
        psdistill.load_scorer("psdistil")
    with pytest.raises(ConfigError, match="no scorer here"):
        psdistill.load_scorer(tmp_path)


def test_fgaesq_scorer_shares_the_callable_interface(tmp_path):
    from psdistill.baselines.fgaesq import load_base

    model, _ = load_base("tiny", seed=0, image_size=64)
    model.save_pretrained(tmp_path / "fg" / "checkpoint")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (64 + 32 * k, 64, 3), dtype=np.uint8) for k in range(3)]
    paths = []
    for k, a in enumerate(arrays):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(a).save(paths[-1])
    scorer = psdistill.load_scorer(tmp_path / "fg", device="cpu")  # the run directory stands for checkpoint/
    reference = scorer.score(paths)
    assert scorer.dimensions == ("overall",) and scorer.device.type == "cpu"
    np.testing.assert_allclose(scorer([arrays[0], Image.open(paths[1]), paths[2]]), reference, rtol=1e-5)
    assert scorer(arrays[1]) == pytest.approx(reference[1], rel=1e-5)


def test_score_command_writes_what_the_api_returns(run, tmp_path, capsys):
    run_dir, paths = run
    out = tmp_path / "scores.csv"
    assert main(["score", "--model", str(run_dir), str(run_dir / "images"), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {len(paths)} scores to {out}")
    written = read_predictions(out)["overall"]
    assert list(written) == [Path(p).stem for p in paths]  # a folder gives its images, sorted
    np.testing.assert_allclose(list(written.values()), psdistill.load_scorer(run_dir)(paths), rtol=1e-6)


def test_help_lists_each_command_once_and_every_config_field(capsys):
    assert main(["--help"]) == 0
    commands = [line.split()[0] for line in capsys.readouterr().out.split("commands")[1].splitlines()[1:] if line]
    assert sorted(commands) == sorted(set(commands)) and {"run", "score", "distill", "list-scorers"} <= set(commands)
    assert main(["score", "--help"]) == 0  # its own options, and where the config keys are listed
    text = capsys.readouterr().out
    assert "--model MODEL" in text and "listed by its --help" in text and "distill.learning_rate" not in text
    for command in ("run", "distill", "eval"):
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        default = DistillConfig().learning_rate
        assert f"distill.learning_rate  float  (default: {default!r})" in text and "Peak learning rate" in text
        assert "model.trust_remote_code  bool  (default: false)" in text
        assert "data.on_bad_image  one of 'error', 'skip'  (default: 'error')" in text


def test_recipes_print_their_config_fields():
    from psdistill.baselines.fgaesq.config import FGAesQTrainConfig

    def help_of(recipe):
        return subprocess.run([sys.executable, str(ROOT / "recipes" / recipe), "--help"], capture_output=True,
                              text=True, check=True).stdout

    assert f"distill.max_steps  int  (default: {DistillConfig().max_steps}; demo.yaml: " in help_of("distill.py")
    assert f"train.lr  float  (default: {FGAesQTrainConfig().lr!r})" in help_of("fgaesq.py")


def test_importing_psdistill_loads_no_torch():
    code = "import sys, psdistill; psdistill.list_scorers(); print(psdistill.__version__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [psdistill.__version__, "False"]


def test_a_scorer_name_without_its_arguments_or_a_non_image_is_one_clear_error(tmp_path):
    from psdistill.core.errors import ConfigError, DataError
    from psdistill.scoring.api import as_batch

    with pytest.raises(ConfigError, match=r"scorer 'psdistill': missing a required argument: 'path'; it takes \(path"):
        psdistill.load_scorer("psdistill")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'paht'"):
        psdistill.load_scorer("psdistill", path=str(tmp_path), paht=str(tmp_path))
    with pytest.raises(DataError, match="got NoneType"):
        as_batch(None)


def test_demo_help_shows_the_values_the_demo_runs_with(capsys):
    import re

    from psdistill.cli import DEMO_CONFIG
    from psdistill.core.config import parse_config
    from psdistill.core.config_help import format_value
    from psdistill.pipeline import PipelineConfig

    assert main(["demo", "--help"]) == 0
    shown = dict(re.findall(r"^  (\S+)  .*; demo\.yaml: (.*)\)$", capsys.readouterr().out, flags=re.M))
    demo = parse_config(PipelineConfig, ["--config", DEMO_CONFIG])
    assert shown["run_dir"] == "'runs/demo'" and "data.train_categories" in shown and len(shown) > 4
    for key, value in shown.items():  # each marked value is the demo's, and differs from the default
        obj = demo
        for part in key.split("."):
            obj = getattr(obj, part)
        assert value == format_value(obj), key
    assert main(["run", "--help"]) == 0 and "demo.yaml:" not in capsys.readouterr().out  # run's are the library's
