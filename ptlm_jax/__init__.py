"""ptlm_jax: pretrain, compare and fine-tune BERT-, GPT- and T5-style models in JAX/Flax."""

__version__ = '0.1.0'
