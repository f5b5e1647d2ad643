"""Where messages go: the console at the chosen verbosity, and the run's full log file.

    with run_logging("runs/demo", verbosity=0):      # CLI: -v -> 1, -q -> -1
        get_logger("pipeline").info("[judge] judging against the reference pool")

Loggers live under "psdistill" (`get_logger(__name__)`). The console shows INFO and up (DEBUG with
--verbose, WARNING and up with --quiet); `<run>/logs/run.log` gets everything, DEBUG included (the
Trainer's metric dicts, psdistill.distill.job). Only the main process (RANK 0) writes either: the
others' messages would repeat it. A record logged with `extra={"console": False}` goes to the file
only (the final report, which the CLI prints itself).
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = "psdistill"
LOG_FILE = "logs/run.log"
_FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _not_deepspeed_cpu_fallback(record: logging.LogRecord) -> bool:
    # DeepSpeed (imported by transformers/accelerate when installed) warns on every start without CUDA
    # that it falls back to CPU: on a CPU machine that is the expected case and tells the user nothing.
    return not record.getMessage().startswith("Setting accelerator to CPU")


def _not_bnb_optional_kernel(record: logging.LogRecord) -> bool:
    # bitsandbytes (imported by peft when the quant extra is installed) tries, on CPUs with AVX512-BF16,
    # to fetch an optional faster 4-bit kernel from the hub on import, and it and the `kernels` package
    # warn when it cannot (offline, untrusted): it falls back to its own kernel, and runs that never
    # quantize printed both lines too.
    message = record.getMessage()
    return not (message.startswith("Failed to load CPU gemm_4bit_forward")
                or "'kernels-community/quantization-bitsandbytes'" in message)


# On the loggers themselves (DeepSpeed's handler does not propagate), before the libraries create them.
logging.getLogger("DeepSpeed").addFilter(_not_deepspeed_cpu_fallback)
for _name in ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub"):
    logging.getLogger(_name).addFilter(_not_bnb_optional_kernel)


VERBOSITY_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def progress_bars_as_asked(argv) -> None:
    """No progress bars with -q/--quiet, nor off a terminal (redrawn into a file or a pipe they are
    thousands of lines). Call it before anything imports tqdm: tqdm reads TQDM_* once, at import
    (our own bars pass disable=None, its TTY test)."""
    if not sys.stderr.isatty() or any(a in ("-q", "--quiet") for a in argv):
        os.environ.setdefault("TQDM_DISABLE", "1")


def bar_disable(wanted: bool = True):
    """tqdm's `disable=` for our own bars: None (drawn on a terminal only) when wanted here and TQDM_DISABLE
    is unset, else True. An explicit `disable=` overrides tqdm's own reading of TQDM_DISABLE (-q, off a
    terminal, or the user's), and tqdm counts any non-empty value as set."""
    return None if wanted and not os.environ.get("TQDM_DISABLE") else True


def split_verbosity(argv) -> tuple[int, list[str]]:
    """(verbosity, argv without -v/-q flags): +1 with -v/--verbose, -1 with -q/--quiet."""
    flags = [a for a in argv if a in VERBOSITY_FLAGS]
    verbosity = any(a in ("-v", "--verbose") for a in flags) - any(a in ("-q", "--quiet") for a in flags)
    return verbosity, [a for a in argv if a not in VERBOSITY_FLAGS]


def report_printer(log: logging.Logger):
    """A line printer for the final report: on the console whatever the verbosity, and in the run log."""
    def out(line: str) -> None:
        print(line)
        log.info(line, extra={"console": False})
    return out


@contextmanager
def run_logging(run_dir=None, verbosity: int = 0):
    """For the duration of a command: the "psdistill" logger to the console by `verbosity`, and to
    `<run_dir>/logs/run.log` (appended to, so a resumed run keeps its history) when `run_dir` is given."""
    root = logging.getLogger(ROOT)
    handlers: list[logging.Handler] = [logging.NullHandler()]
    if os.environ.get("RANK", "0") == "0":
        console = logging.StreamHandler(sys.stdout)
        console.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)
        console.addFilter(lambda record: getattr(record, "console", True))
        handlers = [console]
        if run_dir is not None:
            handlers.append(_RunLogHandler(Path(run_dir) / LOG_FILE, encoding="utf-8", delay=True))
            handlers[-1].setFormatter(logging.Formatter(_FILE_FORMAT))
    saved = root.level, root.propagate, root.handlers[:]
    root.setLevel(logging.DEBUG)
    root.propagate = False
    root.handlers = handlers
    try:
        yield root
    finally:
        root.setLevel(saved[0])
        root.propagate = saved[1]
        root.handlers = saved[2]
        for handler in handlers:
            handler.close()



class _RunLogHandler(logging.FileHandler):
    """Opens (and makes logs/) at the first message (delay=True), so that setting up creates nothing in
    the run directory before the pipeline has checked the config and claimed it."""

    def emit(self, record):
        try:
            if self.stream is None:  # not opened yet
                Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
            super().emit(record)  # opens the file first when it is not open
        except OSError as e:  # a finished run read from a read-only disk, a full disk
            self._console_only(e)

    def handleError(self, record):
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            return super().handleError(record)
        self._console_only(exc)

    def _console_only(self, exc: OSError) -> None:
        # One line, then no more attempts: logging would print a traceback for every message.
        print(f"psdistill: warning: cannot write the run log {self.baseFilename} ({exc.strerror or exc}); "
              "messages go to the console only",
              file=sys.stderr)
        self.setLevel(logging.CRITICAL + 1)
