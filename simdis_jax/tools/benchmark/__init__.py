"""The train step's throughput against the devices' own limit, and the paper's Table 1 (entry:
simdis_jax/benchmark.py)."""
