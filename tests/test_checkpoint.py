"""simdis_jax/checkpoint.py: the save/restore round trip, the CRC per array and the finiteness check, the walk back
past damaged steps, the divergence stop's wording, and the start-up checks (free space, a writable workdir)."""

import glob
import json
import os
import shutil
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from simdis_jax import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADVICE = "Lower --config.optim.base_lr."


def _state(scale=1.0, width=64):
  rng = np.random.default_rng(0)
  return {
    "w": jnp.asarray(rng.normal(size=(width, 300)).astype(np.float32) * scale),
    "bn": {"var": jnp.ones((width,)), "mean": jnp.zeros((width,))},
    "step": jnp.int32(0),
  }


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def saved(workdir, steps=(1, 2, 3, 4, 5)):
  """A workdir with one small random state per step (state of step s = _state(s))."""
  mgr = checkpoint.manager(workdir, keep=10)
  for s in steps:
    checkpoint.save(mgr, s, _state(s))
  mgr.wait_until_finished()
  return mgr


def _largest_data_file(workdir, step):
  return max(glob.glob(f"{workdir}/checkpoints/{step}/default/ocdbt.process_0/d/*"), key=os.path.getsize)


def truncate(workdir, step):
  path = _largest_data_file(workdir, step)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def flip_bit(workdir, step):
  path = _largest_data_file(workdir, step)
  data = bytearray(open(path, "rb").read())
  data[len(data) // 2] ^= 0x40
  open(path, "wb").write(bytes(data))


DAMAGE = {
  "truncated array file": (truncate, "unreadable"),
  "deleted _METADATA": (lambda w, s: os.remove(f"{w}/checkpoints/{s}/default/_METADATA"), "unreadable metadata"),
  "deleted manifest.ocdbt": (lambda w, s: os.remove(f"{w}/checkpoints/{s}/default/manifest.ocdbt"), "unreadable"),
  "bit flip": (flip_bit, "checksum mismatch"),
}


def test_a_state_restores_exactly_with_one_crc32_per_array(tmp_path):
  mgr = checkpoint.manager(str(tmp_path))
  state = _state(2.0)
  state["step"] = jnp.int32(7)
  checkpoint.save(mgr, 3, state)
  mgr.wait_until_finished()
  assert mgr.all_steps() == [3] and checkpoint.has_checksums(mgr, 3) and not checkpoint.has_checksums(mgr, 4)
  record = json.load(open(tmp_path / checkpoint.CHECKSUM_DIR / "3.json"))
  assert record == {
    "w": zlib.crc32(np.asarray(state["w"]).tobytes()),
    "bn/var": zlib.crc32(np.ones(64, np.float32).tobytes()),
    "bn/mean": zlib.crc32(np.zeros(64, np.float32).tobytes()),
    "step": zlib.crc32(np.int32(7).tobytes()),
  }
  restored = checkpoint.restore_latest(checkpoint.manager(str(tmp_path)), _abstract(state))
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert int(restored["step"]) == 7
  assert checkpoint.restore_latest(checkpoint.manager(str(tmp_path / "empty")), _abstract(state)) is None


def test_rotation_keeps_the_newest_steps_and_drops_an_old_steps_crc_record_at_the_next_save(tmp_path):
  mgr = checkpoint.manager(str(tmp_path), keep=2)
  records = []
  for step in (1, 2, 3, 4):
    checkpoint.save(mgr, step, _state(step))
    mgr.wait_until_finished()
    records.append(sorted(os.listdir(tmp_path / checkpoint.CHECKSUM_DIR)))
  assert mgr.all_steps() == [3, 4]
  # A save prunes the records of the steps rotated out before it; the step its own save rotates out goes next time.
  assert records == [["1.json"], ["1.json", "2.json"], ["1.json", "2.json", "3.json"], ["2.json", "3.json", "4.json"]]
  np.testing.assert_array_equal(checkpoint.restore_latest(mgr, _abstract(_state()))["w"], _state(4)["w"])


def test_non_finite_leaves_names_the_float_arrays_holding_nan_or_inf():
  leaves = {
    "a": np.asarray([1.0, np.nan]),
    "b": np.asarray([np.inf], np.float32),
    "c": np.ones(3, np.float32),
    "d": np.asarray([7], np.int32),
  }
  assert checkpoint.non_finite_leaves(leaves) == ["a", "b"]
  assert checkpoint.non_finite_leaves({"c": leaves["c"], "d": leaves["d"]}) == []


def test_the_divergence_stop_says_which_checkpoint_is_kept():
  assert str(checkpoint.diverged(9, "Non-finite metrics", None, ADVICE)) == (
    f"Non-finite metrics at step 9: training stopped; no checkpoint was saved. {ADVICE}"
  )
  assert str(checkpoint.diverged(9, "Non-finite metrics", 8, ADVICE)) == (
    "Non-finite metrics at step 9: training stopped; the last checkpoint (step 8, verified finite) is kept and a "
    f"restart resumes from it. {ADVICE}"
  )
  assert str(checkpoint.diverged(9, "Non-finite metrics", 8, ADVICE, verified=False)) == (
    "Non-finite metrics at step 9: training stopped; the last checkpoint (step 8) is kept but was restored "
    "UNVERIFIED (no checksum file): it may be damaged, so if lowering the learning rate does not help, start "
    f"afresh. {ADVICE}"
  )
  checkpoint.check_finite_metrics(5, {"loss": 1.5, "lr": 0.0}, 4, ADVICE)  # finite: no error
  with pytest.raises(FloatingPointError) as e:
    checkpoint.check_finite_metrics(5, {"loss": float("nan"), "lr": 0.1}, 4, ADVICE)
  assert str(e.value) == (
    "Non-finite metrics {'loss': nan} at step 5: training stopped; the last checkpoint "
    f"(step 4, verified finite) is kept and a restart resumes from it. {ADVICE}"
  )


def test_save_finite_turns_a_refused_state_into_the_divergence_stop(tmp_path):
  mgr = checkpoint.manager(str(tmp_path))
  checkpoint.save_finite(mgr, 2, _state(), None, ADVICE)
  bad = _state()
  bad["w"] = bad["w"].at[0, 0].set(jnp.nan)
  with pytest.raises(FloatingPointError) as e:
    checkpoint.save_finite(mgr, 4, bad, 2, ADVICE)
  assert str(e.value) == (
    "The state at step 4 holds NaN/Inf in 1 arrays (e.g. w) at step 4: training stopped; the "
    f"last checkpoint (step 2, verified finite) is kept and a restart resumes from it. {ADVICE}"
  )
  mgr.wait_until_finished()
  assert mgr.all_steps() == [2]


def test_free_space_counts_the_workdirs_own_checkpoints_as_available(tmp_path, monkeypatch):
  abstract = _abstract(_state())
  size = checkpoint.state_bytes(abstract)
  assert size == 64 * 300 * 4 + 2 * 64 * 4 + 4
  need = size * 3 + 1000  # keep 2, one in flight, a margin of 1000 bytes
  free = {"bytes": need}
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, 0, free["bytes"]))
  workdir = str(tmp_path)
  checkpoint.check_free_space(workdir, abstract, keep=2, margin_bytes=1000)  # exactly enough
  free["bytes"] = need - 1
  with pytest.raises(OSError) as e:
    checkpoint.check_free_space(workdir, abstract, keep=2, margin_bytes=1000)
  assert str(e.value) == (
    f"Not enough free disk for checkpoints in {workdir}: 0 MiB available, 0 MiB needed (2 kept + 1 in flight of "
    "0.1 MiB each, plus a margin). Free space, choose another --workdir, or lower --config.train.keep_checkpoints."
  )
  os.makedirs(tmp_path / "checkpoints" / "1")
  (tmp_path / "checkpoints" / "1" / "array").write_bytes(b"x")  # one byte of old checkpoints, freed by rotation
  checkpoint.check_free_space(workdir, abstract, keep=2, margin_bytes=1000)
  checkpoint.check_free_space("gs://bucket/run", abstract, keep=2)  # object stores are not checked


def test_a_failed_start_leaves_no_empty_checkpoints_folder_and_an_unwritable_workdir_is_named(tmp_path):
  folder = tmp_path / "checkpoints"
  checkpoint.remove_if_empty(str(tmp_path))  # no folder: nothing to do
  folder.mkdir()
  checkpoint.remove_if_empty(str(tmp_path))
  assert not folder.exists()
  (folder / "1").mkdir(parents=True)
  checkpoint.remove_if_empty(str(tmp_path))
  assert (folder / "1").is_dir()
  checkpoint.check_writable(str(tmp_path / "new" / "run"))
  assert os.listdir(tmp_path / "new" / "run") == []  # created, and the probe file removed
  (tmp_path / "a_file").write_text("x")
  with pytest.raises(
    OSError,
    match=rf"^--workdir {tmp_path}/a_file/run is not writable \(.*\); choose a "
    r"directory you can write to\.$",
  ):
    checkpoint.check_writable(str(tmp_path / "a_file" / "run"))


def test_a_bit_flip_restores_silently_in_orbax_itself(tmp_path):
  """Why the CRC record exists: orbax reads a flipped bit in an array file back without complaint."""
  mgr = saved(str(tmp_path), steps=(1,))
  flip_bit(str(tmp_path), 1)
  restored = mgr.restore(1, args=ocp.args.StandardRestore(_abstract(_state())))
  assert not np.array_equal(np.asarray(restored["w"]), np.asarray(_state(1)["w"]))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_step(tmp_path, damage, caplog):
  workdir = str(tmp_path)
  mgr = saved(workdir)
  harm, reason = DAMAGE[damage]
  harm(workdir, 5)
  harm(workdir, 4)
  restored = checkpoint.restore_latest(mgr, _abstract(_state()))
  np.testing.assert_array_equal(restored["w"], _state(3)["w"])
  assert f"step 5: {reason}" in caplog.text and f"step 4: {reason}" in caplog.text
  # The damaged steps are moved aside (kept, not deleted), so training saves steps 4 and 5 anew.
  assert mgr.all_steps() == [1, 2, 3]
  assert sorted(os.listdir(glob.glob(f"{workdir}/{checkpoint.DAMAGED_DIR}/*")[0])) == [
    "4",
    "4.checksums.json",
    "5",
    "5.checksums.json",
  ]
  checkpoint.save(mgr, 4, _state(4))
  mgr.wait_until_finished()


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(tmp_path):
  mgr = saved(str(tmp_path), steps=(1, 2))
  with pytest.raises(
    checkpoint.CheckpointMismatch,
    match=r"step 2 .* another model/method/optimizer: 3 arrays of other shapes \(e.g. bn/mean: "
    r"checkpoint \(64,\), this run \(32,\)\)",
  ):
    checkpoint.restore_latest(mgr, _abstract(_state(width=32)))
  assert mgr.all_steps() == [1, 2]  # nothing moved


def test_every_step_damaged_is_one_clear_error_and_nothing_is_moved(tmp_path):
  workdir = str(tmp_path)
  mgr = saved(workdir, steps=(1, 2))
  truncate(workdir, 1)
  flip_bit(workdir, 2)
  with pytest.raises(checkpoint.NoIntactCheckpoint, match=r"step 2: checksum mismatch .*step 1: unreadable"):
    checkpoint.restore_latest(mgr, _abstract(_state()))
  assert mgr.all_steps() == [1, 2]


def test_a_chosen_step_is_verified_too_and_a_damaged_one_names_the_others(tmp_path):
  """runs.restore (teacher, kNN, linear evaluation, export) reads one given step: damage is an error, never used."""
  workdir = str(tmp_path)
  mgr = saved(workdir, steps=(1, 2, 3))
  flip_bit(workdir, 2)
  np.testing.assert_array_equal(checkpoint.restore_step(mgr, 3, _abstract(_state()))["w"], _state(3)["w"])
  with pytest.raises(
    checkpoint.NoIntactCheckpoint, match=r"step 2 .* is damaged: checksum mismatch .* Its other steps are \[1, 3\]\."
  ):
    checkpoint.restore_step(mgr, 2, _abstract(_state()))
  with pytest.raises(checkpoint.CheckpointMismatch, match=r"step 3 .* does not hold this run's networks"):
    checkpoint.restore_step(mgr, 3, _abstract(_state(width=32)))
  assert mgr.all_steps() == [1, 2, 3]  # nothing moved: a chosen step is the user's to replace


def test_a_non_finite_state_is_never_saved(tmp_path):
  mgr = checkpoint.manager(str(tmp_path))
  bad = _state()
  bad["bn"]["var"] = bad["bn"]["var"].at[3].set(jnp.inf)
  with pytest.raises(FloatingPointError, match=r"step 7 holds NaN/Inf in 1 arrays \(e.g. bn/var\)"):
    checkpoint.save(mgr, 7, bad)
  mgr.wait_until_finished()
  assert mgr.all_steps() == []


def test_a_step_without_checksums_is_restored_as_unverified_in_one_line_never_called_verified(tmp_path, caplog):
  """As for a checkpoint written before checksums existed: a bit flip cannot be seen, so it is said, not hidden."""
  workdir = str(tmp_path)
  mgr = saved(workdir, steps=(1, 2))
  os.remove(f"{workdir}/{checkpoint.CHECKSUM_DIR}/2.json")
  flip_bit(workdir, 2)
  checkpoint.restore_latest(mgr, _abstract(_state()))
  lines = [r.getMessage() for r in caplog.records if "UNVERIFIED" in r.getMessage()]
  assert len(lines) == 1 and "step 2" in lines[0] and "no checksum file" in lines[0]
  assert not checkpoint.has_checksums(mgr, 2) and checkpoint.has_checksums(mgr, 1)
  stop = str(checkpoint.diverged(7, "Non-finite metrics", 2, ADVICE, verified=False))
  assert "verified finite" not in stop and "restored UNVERIFIED (no checksum file): it may be damaged" in stop


@pytest.mark.parametrize("harm", ["truncated", "deleted arrays"])
def test_a_damaged_checksum_file_is_a_damaged_step_and_the_run_falls_back(tmp_path, caplog, harm):
  workdir = str(tmp_path)
  mgr = saved(workdir, steps=(1, 2, 3))
  path = f"{workdir}/{checkpoint.CHECKSUM_DIR}/3.json"
  text = open(path).read()
  open(path, "w").write(text[: len(text) // 2] if harm == "truncated" else "[1, 2]")
  restored = checkpoint.restore_latest(mgr, _abstract(_state()))
  np.testing.assert_array_equal(restored["w"], _state(2)["w"])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping" in r.getMessage()]
  assert len(warnings) == 1 and f"step 3: its checksum file {path} is unreadable" in warnings[0]
  assert mgr.all_steps() == [1, 2]


def test_readers_walk_back_past_a_bit_flip_with_one_warning_and_list_the_steps_of_a_missing_one(tmp_path, caplog):
  """checkpoint.restore_verified (API, export, kNN, linear evaluation, teacher): nothing is moved in a run it reads."""
  workdir = str(tmp_path)
  mgr = saved(workdir, steps=(1, 2, 3))
  flip_bit(workdir, 3)
  state, step = checkpoint.restore_verified(mgr, _abstract(_state()))
  assert step == 2
  np.testing.assert_array_equal(state["w"], _state(2)["w"])
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "step 3" in warnings[0] and "checksum mismatch" in warnings[0]
  assert "using step 2, the newest intact one" in warnings[0]
  assert mgr.all_steps() == [1, 2, 3]
  partial = {"w": _abstract(_state())["w"]}  # one array alone, as the embedding API reads one network
  assert checkpoint.restore_verified(checkpoint.manager(workdir), partial, partial=True)[1] == 2
  with pytest.raises(ValueError, match=r"has no checkpoint at step 999; its steps are \[1, 2, 3\]"):
    checkpoint.restore_verified(mgr, _abstract(_state()), 999)
  with pytest.raises(checkpoint.NoIntactCheckpoint, match=r"step 3 .* is damaged: checksum mismatch"):
    checkpoint.restore_verified(mgr, _abstract(_state()), 3)


FULL_DISK = r"""
import json, resource, signal, sys
import numpy as np
import jax.numpy as jnp
from simdis_jax import checkpoint
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
workdir = sys.argv[1]
state = lambda seed: {"w": jnp.asarray(np.random.default_rng(seed).normal(size=(1 << 17,)).astype(np.float32))}
mgr = checkpoint.manager(workdir, keep=5)
checkpoint.save(mgr, 1, state(1))
mgr.wait_until_finished()
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))  # no file may grow past 64 KiB now
error = None
try:
  checkpoint.save(mgr, 2, state(2))
  checkpoint.save(mgr, 3, state(3))
  checkpoint.finish(mgr)
except OSError as e:
  error = str(e)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
mgr = checkpoint.manager(workdir, keep=5)
restored = checkpoint.restore_latest(mgr, {"w": jnp.zeros((1 << 17,), jnp.float32)})
print(json.dumps({"error": error, "steps": mgr.all_steps(),
                  "intact": bool(np.array_equal(np.asarray(restored["w"]), np.asarray(state(1)["w"])))}))
"""


def test_a_save_that_runs_out_of_disk_is_one_line_and_loses_nothing(tmp_path):
  """The async save's failure (tensorstore's 1.8 KB RESOURCE_EXHAUSTED line before) is one OSError naming the fix."""
  proc = subprocess.run(
    [sys.executable, "-c", FULL_DISK, str(tmp_path / "w")],
    capture_output=True,
    text=True,
    timeout=300,
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=ROOT),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["error"] == (
    f"Saving a checkpoint in {tmp_path / 'w' / 'checkpoints'} failed: a file outgrew the size limit (File too "
    "large); the checkpoints saved before it (steps [1]) are intact. Free space (or lower "
    "--config.train.keep_checkpoints) and run the same command to resume."
  )
  assert result["steps"] == [1] and result["intact"]
