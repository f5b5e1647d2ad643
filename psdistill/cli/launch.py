"""How a command ends: a user error as one line and exit status 2 (`exit_status`), and `psdistill launch`,
accelerate's launcher with that line as the last thing printed.

    psdistill launch --config_file launch/cpu_ddp.yaml recipes/distill.py data.manifest=...   # = accelerate launch ...

`accelerate launch` answers a child's non-zero exit with a traceback of its own, after the recipe's
line: a CalledProcessError for one process (`accelerate launch -q` turns that one off), torch elastic's
ChildFailedError report for several (no flag turns it off). `psdistill launch` runs the same launcher
(`accelerate.commands.launch`) in its own process, with $PSDISTILL_ERROR_FILE set: the recipe's
processes write their error there instead of printing it, and the launcher's exception for that exit
becomes the line. A rank killed by a signal gets a line naming it; another failure without that file (a
crash, a bug) keeps the launcher's report.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from psdistill.core.errors import PsdistillError
from psdistill.core.storage import storage_message

ERROR_FILE_ENV = "PSDISTILL_ERROR_FILE"


def exit_status(command: Callable[[], int], prog: str = "psdistill") -> int:
    """Run `command`; a user error (PsdistillError, a write the disk refused) prints one line and gives 2."""
    try:
        return command()
    except PsdistillError as e:
        return _user_error(prog, str(e))
    except OSError as e:  # a write the disk refused (full, read-only) where no stage named the file
        message = storage_message(e, e.filename or os.getcwd())
        if message is None:
            raise
        return _user_error(prog, message)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


def _user_error(prog: str, message: str) -> int:
    line = f"{prog}: error: {message}"
    error_file = os.environ.get(ERROR_FILE_ENV)
    if error_file:  # under `psdistill launch`: it prints the line once, after the launcher's own output
        try:
            with open(error_file, "x") as f:  # the first rank to fail names the cause
                f.write(line + "\n")
        except FileExistsError:
            pass
    else:
        print(line, file=sys.stderr)
    return 2


def launch(argv: list[str]) -> int:
    """`accelerate launch ARGV`; a recipe's user error is printed last, with exit status 2."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = launch_command_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="psdistill-launch-") as tmp:
        error_file = Path(tmp) / "error"
        os.environ[ERROR_FILE_ENV] = str(error_file)
        try:
            launch_command(args)
        except (subprocess.CalledProcessError, ChildFailedError, SystemExit) as e:
            if not error_file.is_file():
                if not _killed(e):
                    raise
                print(f"psdistill: error: {_killed(e)}", file=sys.stderr)
                return 1
            print(error_file.read_text().rstrip("\n"), file=sys.stderr)
            return 2
        finally:
            del os.environ[ERROR_FILE_ENV]
    return 0


def _killed(error) -> str | None:
    """A line for a rank killed by a signal (no traceback to show: the OOM killer, a SIGKILL), else None.
    The launcher then stops the other ranks, often before any of them can say what went wrong."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if not isinstance(error, ChildFailedError):
        return None
    rank, failure = error.get_first_failure()
    if failure.exitcode >= 0:
        return None
    return (f"rank {rank} was killed by {failure.signal_name()} (out of memory, or stopped from outside) and the "
            "launcher stopped the others; finished work is kept (judgments: every chunk stored), rerun the same "
            "command to resume")
