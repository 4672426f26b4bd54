"""Running a study: every (preset, seed) not done yet, in the config's order, each in its own process.

A run's output goes to `<run workdir>/output.log`. The study skips done runs and
resumes unfinished ones from their checkpoints, so the same command continues
after any interruption. SIGTERM/SIGINT are passed on to the running run, which
saves and stops; the study then exits with status 143. A failing run is recorded
and the study goes on with the runs that do not need it. The report is rewritten
after every finished run, and each finished run is archived (tools/study/archive.py).
"""

import datetime
import os
import signal
import subprocess
import time
from typing import Optional

from simdis_jax.tools.study.archive import archive_run, sync_archive
from simdis_jax.tools.study.plan import (
  commands,
  is_done,
  method_of,
  parse_runs,
  read_status,
  run_dir,
  run_env,
  teacher_run,
  teacher_runs,
  write_status,
)
from simdis_jax.tools.study.report import DEFAULT_CONFIG, commit, write_study_report

PREEMPTED_EXIT_CODE = 143


class _Forwarder:
  """Passes SIGTERM/SIGINT on to the running child; remembers that the study must stop."""

  def __init__(self):
    self.child: Optional[subprocess.Popen] = None
    self.stopping = False
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    del frame
    self.stopping = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)  # the run saves at its next step and exits 143
    print(f"Study: signal {signum}; the running run saves and stops, then the study exits.", flush=True)

  def close(self):
    for s, handler in self._old.items():
      signal.signal(s, handler)


def _run_command(forwarder: _Forwarder, cmd, directory: str, env: Optional[dict] = None) -> int:
  """Runs one command of a run (with `env` added to the environment; XLA_FLAGS appended to) with its output
  appended to the run's output.log; its exit status."""
  full_env = dict(os.environ)
  for var, value in (env or {}).items():
    full_env[var] = f"{full_env[var]} {value}" if var == "XLA_FLAGS" and full_env.get(var) else value
  with open(os.path.join(directory, "output.log"), "a") as log:
    log.write(
      f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(cmd)}"
      f"{''.join(f' [{k}={v}]' for k, v in (env or {}).items())}\n"
    )
    log.flush()
    forwarder.child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    code = forwarder.child.wait()
    forwarder.child = None
  return code


def run_study(
  study, workdir: str, results: str, figures: str, config_path: str = DEFAULT_CONFIG, archive: str = ""
) -> int:
  """Runs every (preset, seed) not done yet, in order; writes the report after each; returns an exit code."""
  runs = parse_runs(study.runs)
  teachers = teacher_runs(study)
  status = read_status(workdir)
  sync_archive(study, workdir, archive, status)
  forwarder = _Forwarder()
  failed = set()
  started = time.time()
  try:
    for preset, seed in runs:
      directory = run_dir(workdir, preset, seed)
      if is_done(study, directory):
        continue
      if method_of(study, preset) in ("simdis_off", "seed") and teacher_run(study, preset) in failed:
        print(f"Study: skipping {preset} seed {seed}: its teacher run failed.", flush=True)
        continue
      os.makedirs(directory, exist_ok=True)
      for cmd in commands(study, workdir, preset, seed):
        print(f"Study: {preset} seed {seed}: {' '.join(cmd)}", flush=True)
        t0, code_commit = time.time(), commit()  # the code the run starts on (a pull during it changes nothing it runs)
        code = _run_command(forwarder, cmd, directory, run_env(study, preset))
        status["segments"].append(
          {"run": f"{preset}/seed{seed}", "seconds": time.time() - t0, "exit": code, "commit": code_commit}
        )
        if code == 0 and not forwarder.stopping:  # a stop that landed as this command ended starts no next one
          continue
        if forwarder.stopping or code == PREEMPTED_EXIT_CODE:
          forwarder.stopping = True
        else:
          failed.add((preset, seed))
          status["failed"][f"{preset}/seed{seed}"] = f"exit status {code}; see {os.path.join(directory, 'output.log')}"
          print(
            f"Study: {preset} seed {seed} FAILED (exit {code}); see {directory}/output.log. "
            "Going on with the other runs.",
            flush=True,
          )
        break
      if is_done(study, directory):
        status["failed"].pop(f"{preset}/seed{seed}", None)
        print(f"Study: {preset} seed {seed} done.", flush=True)
        if archive:
          print(
            "Study: archived in "
            f"{archive_run(study, workdir, archive, preset, seed, status, (preset, seed) in teachers)}"
            " (commit it to keep it).",
            flush=True,
          )
      write_status(workdir, status)
      write_study_report(study, workdir, results, figures, config_path)
      if forwarder.stopping:
        print("Study: stopped; run the same command to continue.", flush=True)
        return PREEMPTED_EXIT_CODE
  finally:
    forwarder.close()
  write_study_report(study, workdir, results, figures, config_path)
  todo = [r for r in runs if not is_done(study, run_dir(workdir, *r))]
  print(
    f"Study: {len(runs) - len(todo)} of {len(runs)} runs done ({time.time() - started:.0f}s this time); "
    f"report in {results}.",
    flush=True,
  )
  return 1 if todo else 0
