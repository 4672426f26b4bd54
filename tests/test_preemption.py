"""simdis_jax/preemption.py: a SIGTERM stops at the next step boundary, a second Ctrl-C at once, and the stop's
message and exit status."""

import os
import signal

import pytest

from simdis_jax import preemption


def test_a_sigterm_stops_at_the_next_step_boundary_and_a_second_ctrl_c_stops_at_once():
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  watch = preemption.PreemptionWatch()
  try:
    assert not watch.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert watch.reached(2) and watch.reached(3)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)  # the flag is set: a Ctrl-C now stops without the checkpoint
  finally:
    watch.close()
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  assert str(preemption.Preempted(12, "/w")) == (
    "Preempted: checkpoint saved at step 12 in /w. Run the same command again to resume from it (exit status 143)."
  )
