"""What differs between BERT, GPT and T5, in one record per family (no jax imported).

  fam = families.get('t5')
  fam.encoder_decoder          # True: encoder tokens in, decoder tokens out
  fam.objectives[0]            # 'span_corruption', the default pretraining objective

The config system takes each family's reference defaults from here (config_lib.base_config);
models, objectives, FLOP counting and decoding ask the record instead of comparing names.
Sources: BERT (Devlin et al. 2019, google-research/bert), GPT-2 (Radford et al. 2019,
openai/gpt-2; optimiser as in nanoGPT), T5 v1.1 (Raffel et al. 2020, t5x/examples/t5).
"""
from __future__ import annotations

import dataclasses

from ptlm_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  kind: str                      # encoder | decoder | encoder-decoder
  objectives: tuple[str, ...]    # the objectives it trains with; the first is the default
  activation: str                # MLP activation: gelu | gelu_tanh | gated-gelu
  gated_mlp: bool                # three MLP matrices: d_ff is 2/3 of the ungated width
  layer_norm_eps: float
  max_len: int                   # learned position table (BERT, GPT; T5's positions are relative)
  tie_embeddings: bool           # output projection = token embedding
  pooling: str                   # sequence classification: cls | last | mean
  optimizer: str                 # adamw | adafactor
  decay: str                     # linear | cosine | rsqrt
  b2: float
  eps: float
  weight_decay: float
  fixed_lr: float | None         # a peak lr at every size (Adafactor), else by variant

  @property
  def encoder_decoder(self) -> bool:
    return self.kind == 'encoder-decoder'

  @property
  def decoder_only(self) -> bool:
    """GPT-style: one causal stack that continues its prompt."""
    return self.kind == 'decoder'

  @property
  def bidirectional(self) -> bool:
    """Encoder-only: no causal mask, no generation (fills masks instead)."""
    return self.kind == 'encoder'


FAMILIES = {
    'bert': Family('bert', 'encoder', ('mlm',), 'gelu', False, 1e-12, 512, True, 'cls',
                   'adamw', 'linear', 0.999, 1e-6, 0.01, None),
    'gpt': Family('gpt', 'decoder', ('causal_lm', 'prefix_lm'), 'gelu_tanh', False, 1e-5, 1024,
                  True, 'last', 'adamw', 'linear', 0.95, 1e-8, 0.01, None),
    't5': Family('t5', 'encoder-decoder', ('span_corruption', 'prefix_lm', 'ul2'), 'gated-gelu',
                 True, 1e-6, 512, False, 'mean', 'adafactor', 'rsqrt', 0.95, 1e-8, 0.0, 1e-2),
}
NAMES = tuple(FAMILIES)


def get(name: str) -> Family:
  """The record of `name`; ConfigError naming model.family otherwise."""
  if name not in FAMILIES:
    raise ConfigError('model.family', name, f'one of {NAMES}')
  return FAMILIES[name]
