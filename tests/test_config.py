from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from psdistill.core.config import from_dict, parse_config, save_config, to_dict
from psdistill.core.errors import ConfigError
from psdistill.models.loading import ModelConfig
from psdistill.ranking.pool import ReferencePoolConfig


@dataclass
class Inner:
    steps: int = 3
    mode: Literal["lora", "full"] = "lora"


@dataclass
class Outer:
    model: ModelConfig = field(default_factory=ModelConfig)
    inner: Inner = field(default_factory=Inner)
    names: tuple[str, ...] = ("a",)
    lr: float = 1e-3
    tag: Optional[str] = None


def test_yaml_then_overrides_win(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  steps: 10\nlr: 2e-5\nnames: [x, y]\n")  # YAML 1.1 reads 2e-5 as a string
    cfg = parse_config(Outer, ["--config", str(f), "inner.steps=20", "inner.mode=full", "tag=run1"])
    assert cfg.inner.steps == 20 and cfg.inner.mode == "full"
    assert cfg.lr == 2e-5 and cfg.names == ("x", "y") and cfg.tag == "run1"
    assert isinstance(cfg.lr, float)


@pytest.mark.parametrize("override, message", [
    ("inner.stepz=1", "inner.stepz: unknown key; did you mean inner.steps?"),
    ("inner.steps=1.5", "inner.steps: expected an integer, got 1.5"),
    ("inner.mode=half", "inner.mode: 'half' is not one of ['lora', 'full']"),
    ("lr=fast", "lr: expected a number, got 'fast'"),
    ("model.dtype=fp8", "model.dtype: 'fp8' is not one of"),
    ("names=3", "names: expected a list"),
    ("nokey", "expected key=value"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        parse_config(Outer, [override])
    assert message in str(e.value)


@dataclass
class WithPool:
    pool: ReferencePoolConfig = field(default_factory=ReferencePoolConfig)


@pytest.mark.parametrize("value, strategy", [("true", "adaptive"), ("false", "fixed")])
def test_a_removed_key_says_what_to_write_instead(tmp_path, value, strategy):
    old = tmp_path / "old.yaml"
    old.write_text(f"pool:\n  k: 8\n  adaptive: {value}\n")
    for argv in (["--config", str(old)], [f"pool.adaptive={value}"]):
        with pytest.raises(ConfigError) as e:
            parse_config(WithPool, argv)
        assert str(e.value) == f"pool.adaptive: removed; write pool.strategy={strategy} instead"
    cfg = parse_config(WithPool, [f"pool.strategy={strategy}"])
    assert cfg.pool.strategy == strategy and "adaptive" not in to_dict(cfg)["pool"]


def test_missing_and_bad_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_config(Outer, ["--config", str(tmp_path / "none.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("inner: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config(Outer, ["--config", str(bad)])


def test_saved_config_round_trips(tmp_path):
    cfg = parse_config(Outer, ["inner.steps=7", "names=[p, q]"])
    path = save_config(cfg, tmp_path / "resolved.yaml")
    from psdistill.core.config import load_yaml
    assert from_dict(Outer, load_yaml(path)) == cfg
    assert to_dict(cfg)["inner"] == {"steps": 7, "mode": "lora"}
