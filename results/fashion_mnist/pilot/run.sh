#!/usr/bin/env bash
# Issue 18 pilot: monitored kNN over epochs of the BYOL student alone and a teacher candidate.
cd /work/pilot_code
W=/work/main/workdirs/pilot
common="--config.seed=0 --config.final_eval.linear_networks=() --config.optim.warmup_epochs=1.0"
python -m simdis_jax.main --config configs/fashion_mnist/presets.py:byol_student --workdir $W/student_r10w8_e20 \
  $common --config.train.epochs=20 --config.train.knn_every_steps=936 > $W/student_r10w8_e20.log 2>&1
python -m simdis_jax.main --config configs/fashion_mnist/presets.py:byol_teacher --workdir $W/teacher_r10w16_e20 \
  $common --config.model.student.depth=10 --config.train.epochs=20 --config.train.knn_every_steps=936 > $W/teacher_r10w16_e20.log 2>&1
