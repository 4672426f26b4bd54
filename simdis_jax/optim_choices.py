"""config.optim's fixed choices, as data (no JAX): the schema (configuration.py) validates against them and
optim.py implements them; neither imports the other for them."""

OPTIMIZERS = ("lars", "sgd", "adamw")
LARS_FORMS = ("authors", "authors_fallback", "deepmind", "optax")
WEIGHT_DECAY_MASKS = ("all", "kernels")
SCHEDULES = ("cosine", "step")  # after the warm-up: cosine to 0 | x0.1 every optim.step_epochs epochs
