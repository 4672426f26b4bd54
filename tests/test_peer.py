"""The race against the authors' PyTorch step (--peer): the step's names, its input checks, the memory reading."""

import numpy as np
import pytest

from configs.benchmark import r50_r18
from simdis_jax.tools.benchmark import peer


def test_peer_names_are_the_authors_model_strings_for_each_benchmark_variant():
  names = {v: peer._peer_names(r50_r18.get_config(f"{v},32")) for v in ("byol_r18", "byol_r50", "on", "on_7v")}
  assert names == {
    "byol_r18": ("resnet18.sema_dv", None),
    "byol_r50": ("resnet50.sema_dv", None),
    "on": ("resnet18.sema_dv.tema_dv", "resnet50.ttemadv"),
    # The README's 7v string, predictor for predictor.
    "on_7v": ("resnet18.s_dv.sema_sv.sema_dv.t_sv.t_dv.tema_sv.tema_dv", "resnet50.ttemadv"),
  }


def test_peer_refuses_what_the_authors_classes_cannot_build():
  with pytest.raises(ValueError, match="method byol or simdis_on"):
    peer._peer_names(r50_r18.get_config("off,32"))
  c = r50_r18.get_config("byol_r18,32")
  c.model.student.arch = "vit_tiny"
  with pytest.raises(ValueError, match="ResNets the authors' classes can build"):
    peer._peer_names(c)


def test_only_other_shapes_than_the_authors_rebuild_their_resnet_class():
  from configs.fashion_mnist import presets  # pylint: disable=import-outside-toplevel

  assert peer._standard(r50_r18.get_config("on_7v,32")) and peer._standard(r50_r18.get_config("byol_r50,32"))
  study = presets.get_config("simdis_on_7v")  # ResNet-10 w8 <- ResNet-18 w16, CIFAR stem, 28 px grey
  assert not peer._standard(study)
  assert peer._peer_names(study) == ("resnet10.s_dv.sema_sv.sema_dv.t_sv.t_dv.tema_sv.tema_dv", "resnet18.ttemadv")


def test_peer_path_must_be_a_clone_of_the_authors_repository(tmp_path):
  with pytest.raises(ValueError, match="not a clone of the authors' repository"):
    peer.peer_step(str(tmp_path), r50_r18.get_config("byol_r18,32"))


def test_timed_block_reads_the_peak_resident_growth_of_the_block():
  held = []
  seconds, cpu, grown = peer._timed_block(lambda: held.append(np.ones(2**23)), steps=2)  # 64 MiB a call
  assert seconds > 0 and cpu > 0
  if grown is not None:  # Linux only
    assert 120 * 2**20 <= grown < 400 * 2**20, grown
