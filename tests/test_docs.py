"""What the README, recipes, launchers and eval scripts tell a user exists and parses: every config
file loads into its config class, every repository path they name is there, every recipe command
line they show is accepted by the config parser."""
import os
import re
import subprocess
import shlex
from pathlib import Path

import pytest

from psdistill.baselines.fgaesq.config import FGAesQConfig
from psdistill.core.config import parse_config
from psdistill.pipeline import PipelineConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "recipes" / "configs").glob("*.yaml")) + sorted((REPO / "psdistill" / "pipeline" / "configs").glob("*.yaml"))
DOCS = ([REPO / "README.md"] + sorted((REPO / "recipes").glob("*.py")) + sorted((REPO / "launch").iterdir())
        + sorted((REPO / "eval").glob("*.py")) + [REPO / "psdistill" / "cli" / "__init__.py", REPO / "psdistill" / "core" / "config.py"] + CONFIGS)
PATH = re.compile(r"(?<![\w/.<-])((?:recipes|launch|eval|psdistill|tests|docs)/[\w./-]*\w\.(?:ya?ml|json|py|sh|md|csv))")
RECIPES = {"recipes/distill.py": PipelineConfig, "recipes/fgaesq.py": FGAesQConfig, "psdistill run": PipelineConfig}


def _config_class(path: Path):
    return FGAesQConfig if path.name.startswith("fgaesq") else PipelineConfig


def _lines(path: Path):
    """Each shown line, with backslash continuations joined and comment markers stripped."""
    text = re.sub(r"\\\n\s*#?\s*", " ", path.read_text())
    return [line.lstrip("# ").rstrip() for line in text.splitlines()]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads_into_its_config_class(path):
    cfg = parse_config(_config_class(path), ["--config", str(path)])
    assert cfg.run_dir


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_a_doc_names_exists(doc):
    named = {m for line in _lines(doc) for m in PATH.findall(line)}
    # Paths a run writes (under runs/ or a <run> folder) are outputs, not files of the repository.
    missing = sorted(p for p in named if not (REPO / p).exists() and not p.startswith("eval/results/"))
    assert not missing, f"{doc.relative_to(REPO)} names missing files: {missing}"


def _recipe_commands():
    for doc in DOCS:
        for line in _lines(doc):
            for recipe, cls in RECIPES.items():
                head, sep, rest = line.partition(recipe + " ")
                if not sep and line.endswith(recipe):
                    sep, rest = True, ""
                if not sep or re.search(r"[<$]|(^|\s)\[|\b[A-Z]{4,}\b", rest):  # a placeholder or a shell variable
                    continue
                # --help/-v/-q are the command line's own flags, not config overrides.
                args = [a for a in shlex.split(re.sub(r"(^|\s)#.*$", "", rest))
                        if a not in ("--help", "-h", "-v", "--verbose", "-q", "--quiet")]
                yield pytest.param(cls, args, id=f"{doc.relative_to(REPO)}: {recipe} {' '.join(args)}"[:120])


@pytest.mark.parametrize("cls,args", list(_recipe_commands()))
def test_every_recipe_command_shown_parses(cls, args):
    if not any(a in ("--config", "-c") or a.startswith("--config=") for a in args):
        demo = "psdistill/pipeline/configs/demo.yaml" if cls is PipelineConfig else "recipes/configs/fgaesq_demo.yaml"
        args = ["--config", str(REPO / demo)] + args  # what the recipe does without --config
    args = [str(REPO / a) if (REPO / a).is_file() else a for a in args]
    parse_config(cls, args)


def test_the_commands_are_found():
    # The parser test above is only worth something if it sees the README's and recipes' commands.
    ids = [p.id for p in _recipe_commands()]
    assert any(i.startswith("README.md") for i in ids) and any("qwen3vl8b.yaml" in i for i in ids), ids


def _readme_help_commands() -> list[tuple[str, ...]]:
    """The --help of every command the README shows in a code block, as written from a fresh clone."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "README.md").read_text())
    fences = [n for n, line in enumerate(text.splitlines()) if line.startswith("```")]
    lines = text.splitlines()
    out = []
    for line in (l for a, b in zip(fences[::2], fences[1::2]) for l in lines[a + 1:b]):
        words = shlex.split(line, comments=True) if line.startswith(".venv/bin/") else []
        if not words or words[1:3] == ["-m", "pytest"] or words[0] == ".venv/bin/psdistill" and words[1] == "launch":
            continue  # the test command itself; launch's --help is accelerate's
        if words[0] == ".venv/bin/accelerate":
            out.append((".venv/bin/python", next(w for w in words if w.endswith(".py")), "--help"))
        elif words[0] == ".venv/bin/python":
            sub = [words[2]] if len(words) > 2 and not words[2].startswith("-") else []
            out.append((".venv/bin/python", words[1], *sub, "--help"))
        else:
            out += [(words[0], sub, "--help") for sub in words[1].split("|")]
    return sorted(set(out))


def test_the_readme_commands_are_found():
    commands = _readme_help_commands()
    assert (".venv/bin/python", "eval/protocol.py", "apdd-transfer", "--help") in commands
    assert (".venv/bin/psdistill", "fuse", "--help") in commands and len(commands) > 15, commands


@pytest.mark.skipif(not (REPO / ".venv/bin/psdistill").exists() and os.environ.get("CI") != "true",
                    reason="no .venv here (bash setup.sh makes it)")
@pytest.mark.parametrize("command", _readme_help_commands(), ids=" ".join)
def test_every_readme_command_runs_as_written_from_the_repository_root(command):
    # As a new user types it after the two set-up commands: no activated venv, the repo root as cwd.
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/bin:/bin"
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}: exit {done.returncode}\n{done.stderr[-2000:]}"
    assert done.stdout.strip(), done.stderr[-500:]


def test_the_docs_give_fgaesq_its_venue_cvpr_2026():
    # FGAesThetics / FGAesQ: CVPR 2026 (../shared/seeds/003_*.txt), not 2025.
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        assert "CVPR 2025" not in text, doc
    assert "CVPR 2026" in (REPO / "README.md").read_text()
