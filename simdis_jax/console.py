"""What a person sees on the terminal: a progress bar, one line per evaluation, short warnings and errors.

`python -m simdis_jax.main` calls `setup`: absl's full log (every INFO line,
metrics included) then goes to <workdir>/log.txt, and the terminal shows only
the progress bar (steps, images/s, ETA, current loss), one line per
evaluation, simdis_jax's own warnings and the final table. `--verbosity=0`
(or any --verbosity) keeps absl's log on stderr as before. Without `setup`
(library use, tests) nothing here prints.
"""

import logging
import os
import sys
import time
from typing import Optional

from absl import logging as absl_logging

LOG_FILE = "log.txt"
_STATE = {"on": False}


class _OwnWarnings(logging.Filter):
  """simdis_jax's warnings and errors; libraries' (orbax, jax, absl) stay in the log file."""

  def filter(self, record):
    return (
      record.levelno >= logging.WARNING
      and f"{os.sep}simdis_jax{os.sep}" in record.pathname
      and getattr(record, "console", True)
    )


FILE_ONLY = {"console": False}  # logging's `extra=` for records meant for the log file only (tracebacks)


def setup(workdir: str, process_index: int = 0) -> str:
  """Sends absl's log to <workdir>/log.txt (log.process<i>.txt on other processes); returns its path."""
  os.makedirs(workdir, exist_ok=True)
  name = LOG_FILE if process_index == 0 else f"log.process{process_index}.txt"
  path = os.path.join(workdir, name)
  handler = absl_logging.get_absl_handler()
  handler.python_handler.stream = open(path, "a", buffering=1)  # pylint: disable=consider-using-with
  console = logging.StreamHandler(sys.stderr)
  console.addFilter(_OwnWarnings())
  console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
  logging.getLogger().addHandler(console)
  _STATE["on"] = process_index == 0
  return path


def import_tensorflow_quietly(log_path: str) -> None:
  """Imports TensorFlow with its C++ start-up notices (oneDNN, absl::InitializeLog) sent to the log file.

  They are written straight to file descriptor 2, past Python's logging, and
  TF_CPP_MIN_LOG_LEVEL no longer silences them; the import happens anyway (clu's
  metric writers, the data pipeline), so doing it here only moves the lines.
  """
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(log_path, "a") as log:
      os.dup2(log.fileno(), 2)
      try:
        import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      except ImportError:
        pass
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def enabled() -> bool:
  """Whether the console shows progress (set by `setup`, process 0 only)."""
  return _STATE["on"]


def say(text: str) -> None:
  """One line on the console (if enabled), after the progress bar's line."""
  if _STATE["on"]:
    Progress.clear()
    print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
  """A one-line progress bar on stderr: steps, images/s, ETA and the latest loss.

  On a terminal the line is redrawn in place (at most twice a second); into a
  file or pipe it is printed every tenth of the run, so logs stay short.
  """

  _drawn = [False]  # a bar line is on the terminal, not yet ended by a newline

  def __init__(self, total_steps: int, start_step: int, batch_size: int):
    self.total, self.start, self.batch = total_steps, start_step, batch_size
    self.start_time, self.last_draw, self.loss = None, 0.0, None
    self.tty = sys.stderr.isatty()
    self.next_line = start_step

  def update(self, step: int, loss: Optional[float] = None) -> None:
    """Called after every step; `loss` when the step's loss was fetched (log steps)."""
    if not _STATE["on"]:
      return
    if loss is not None:
      self.loss = loss
    now = time.time()
    if self.start_time is None:  # the first step includes compilation: rates count from its end
      self.start_time, self.start = now, step
    done = step - self.start
    rate = done / max(now - self.start_time, 1e-9)
    final = step >= self.total
    if self.tty:
      if now - self.last_draw < 0.5 and not final:
        return
    elif step < self.next_line and not final:
      return
    self.last_draw, self.next_line = now, step + max(self.total // 10, 1)
    width = 24
    filled = int(width * step / max(self.total, 1))
    speed = f"{rate * self.batch:.0f} img/s" if done else "measuring"
    text = (
      f"[{'#' * filled}{'.' * (width - filled)}] step {step}/{self.total}  {speed}  "
      f"ETA {_duration((self.total - step) / max(rate, 1e-9)) if done else '?'}"
      + (f"  loss {self.loss:.3f}" if self.loss is not None else "")
    )
    if self.tty:
      print("\r" + text, end="" if not final else "\n", file=sys.stderr, flush=True)
      Progress._drawn[0] = not final
    else:
      print(text, file=sys.stderr, flush=True)

  @classmethod
  def clear(cls) -> None:
    """Ends a bar line in progress, so the next print starts on a fresh line."""
    if cls._drawn[0]:
      print(file=sys.stderr, flush=True)
      cls._drawn[0] = False
