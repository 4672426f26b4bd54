"""The Fashion-MNIST study cut to one supervised run of a few steps (tests/test_study.py)."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config():
  spec = importlib.util.spec_from_file_location("fmnist_study", os.path.join(ROOT, "configs/fashion_mnist/study.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  c = study.get_config()
  c.runs = ("supervised:3",)
  c.archive = ""  # the test passes --archive
  c.overrides = (
    "--config.train.steps=3",
    "--config.train.batch_size=32",
    "--config.model.student.width=4",
    "--config.knn.train_examples=256",
    "--config.knn.eval_examples=128",
    "--config.final_eval.linear_epochs=1",
    "--config.final_eval.linear_batch_size=64",
    "--config.final_eval.linear_train_examples=256",
    "--config.final_eval.linear_eval_examples=128",
  )
  c.fast_linear_overrides = (
    "--config.train.epochs=2",
    "--config.data.train_examples=256",
    "--config.data.eval_examples=128",
    "--config.eval.batch_size=64",
  )
  return c
