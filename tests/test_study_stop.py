"""The study runner honours a stop that lands as a run's training ends: it starts nothing after it."""

from simdis_jax.tools.study import runner


def test_a_stop_as_training_ends_starts_no_linear_evaluation(tmp_path, monkeypatch):
  ran = []

  def run_command(forwarder, cmd, directory, env=None):
    del directory, env
    ran.append(cmd[0])
    if cmd[0] == "train":
      forwarder.stopping = True  # SIGTERM arrived while the training command was finishing (it still exits 0)
    return 0

  for name, value in {
    "parse_runs": lambda runs: [("p", 0)],
    "teacher_run": lambda study: ("t", 0),
    "read_status": lambda workdir: {"segments": [], "failed": {}},
    "sync_archive": lambda *a: None,
    "is_done": lambda *a: False,
    "method_of": lambda *a: "byol",
    "commands": lambda *a: [["train"], ["linear"]],
    "_run_command": run_command,
    "write_status": lambda *a: None,
    "write_study_report": lambda *a: None,
    "commit": lambda: "abc",
  }.items():
    monkeypatch.setattr(runner, name, value)
  study = type("Study", (), {"runs": ["p:0"], "get": lambda self, key, default=None: default})()
  assert runner.run_study(study, str(tmp_path), str(tmp_path / "r.md"), str(tmp_path)) == runner.PREEMPTED_EXIT_CODE
  assert ran == ["train"]
