"""simdis_jax: SimDis (self-supervised distillation) in JAX/Flax."""
