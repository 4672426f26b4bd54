"""simdis_jax: SimDis (self-supervised distillation) in JAX/Flax.

import simdis_jax
encoder = simdis_jax.load_encoder("<workdir>")   # see simdis_jax.api
features = encoder(uint8_images)
"""

__all__ = ["load_encoder", "Encoder"]


def __getattr__(name):
  # Lazy: `import simdis_jax` stays cheap (no JAX import) until the API is used.
  if name in __all__:
    from simdis_jax import api  # pylint: disable=import-outside-toplevel

    return getattr(api, name)
  raise AttributeError(f"module 'simdis_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
