"""The former name of methods/common.py, kept so that older imports still work; new code imports common."""

from simdis_jax.methods.common import (enqueue, enqueue_global, gather_batch, info_nce, init_queue,  # noqa: F401
                                       l2_normalize, momentum_update, seed_loss, shuffle_to_devices,
                                       unshuffle_from_devices)
