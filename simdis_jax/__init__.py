"""simdis_jax: SimDis (self-supervised distillation) in JAX/Flax."""


def __getattr__(name):
  # Lazy: `import simdis_jax` stays cheap (no JAX import) until the API is used.
  if name in ("load_encoder", "Encoder"):
    from simdis_jax import api  # pylint: disable=import-outside-toplevel
    return getattr(api, name)
  raise AttributeError(f"module 'simdis_jax' has no attribute {name!r}")
