"""Publish a trained student: `psdistill push RUN REPO_ID` uploads `RUN/student/` to the Hugging Face Hub.

What goes up is the scorer folder as `StudentScorer.from_pretrained` reads it (weights or adapter,
processor, `scorer_config.json`, the model card), without the Trainer's `checkpoint-N/` folders and
training state. When the run has been evaluated, its headline figures are added to the model card
first. `--dry-run` lists the files and the card without contacting the Hub (what the tests check:
there is no Hub here).
"""
from __future__ import annotations

import json
from pathlib import Path

from psdistill.distill.card import CARD_FILE
from psdistill.scoring.spec import SPEC_FILE
from psdistill.core.errors import DataError, PsdistillError

_LEFT_OUT = ("checkpoint-", "runs", "training_args.bin", "trainer_state.json", "training_fingerprint.txt")
EVAL_HEADING = "## Evaluation (this run)"


def student_folder(run: str | Path) -> Path:
    run = Path(run)
    for folder in (run / "student", run):
        if (folder / SPEC_FILE).is_file():
            return folder
    raise DataError(f"{run}: no trained student (no {SPEC_FILE} in it or in its student/)")


def upload_plan(run: str | Path) -> tuple[list[tuple[str, Path]], str]:
    """(path in the repo, local file) for every file to upload, and the model card's text with the
    run's evaluation (if any) added."""
    folder = student_folder(run)
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()
                   and not p.relative_to(folder).parts[0].startswith(_LEFT_OUT))
    card = (folder / CARD_FILE).read_text() if (folder / CARD_FILE).is_file() else ""
    marker = folder.parent / "stages" / "evaluate.json"
    if marker.is_file() and EVAL_HEADING not in card:
        headline = json.loads(marker.read_text())["summary"].get("headline", [])
        card += f"\n{EVAL_HEADING}\n\n" + "\n".join(f"- {line}" for line in headline) + "\n"
    return [f for f in files if f[0] != CARD_FILE], card


def push_student(run: str | Path, repo_id: str, private: bool = False, dry_run: bool = False) -> list[str]:
    """Upload the student of `run` to `repo_id` (created if needed); returns the repo paths sent."""
    files, card = upload_plan(run)
    paths = [name for name, _ in files] + ([CARD_FILE] if card else [])
    if dry_run:
        return paths
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(name, str(local)) for name, local in files]
        if card:
            operations.append(CommitOperationAdd(CARD_FILE, card.encode()))
        api.create_commit(repo_id, operations, commit_message="psdistill student")
    except Exception as e:  # offline, no token, no permission: huggingface_hub raises several types
        raise PsdistillError(f"push to {repo_id!r} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                             "; log in with `hf auth login`, or check HF_HUB_OFFLINE") from None
    return paths
