"""Many pretraining runs (presets x seeds), resumable and archived, and their report (entry: simdis_jax/study.py)."""
