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
  pack_mode: str                 # pack (documents with segment ids) | chunk (T5: split the stream)
  base_recipe: tuple             # the paper's pretraining recipe of the base variant: (field, value)

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


# The papers' pretraining recipes (tests/test_recipes.py checks them against the sources).
# BERT (Devlin et al. 2019, A.2): batch 256, 1M steps, Adam 1e-4, 10k warm-up, linear decay,
# weight decay 0.01.  GPT-2 (Radford et al. 2019): context 1024; the schedule (AdamW, cosine)
# follows GPT-3 (Brown et al. 2020, C), as GPT-2 gives none; batch 512.  T5 (Raffel et al.
# 2020, 3.1.2): batch 128 x 512, 2^19 steps, Adafactor at 1e-2 held for 10^4 steps, then
# 1/sqrt(step).
_BERT_RECIPE = (('optim.warmup_steps', 10_000), ('train.steps', 1_000_000),
                ('train.batch_size', 256))
_GPT_RECIPE = (('data.seq_len', 1024), ('optim.decay', 'cosine'), ('train.batch_size', 512))
_T5_RECIPE = (('optim.warmup_steps', 10_000), ('train.steps', 2**19), ('train.batch_size', 128))

FAMILIES = {
    'bert': Family('bert', 'encoder', ('mlm',), 'gelu', False, 1e-12, 512, True, 'cls',
                   'adamw', 'linear', 0.999, 1e-6, 0.01, None, 'pack', _BERT_RECIPE),
    'gpt': Family('gpt', 'decoder', ('causal_lm', 'prefix_lm'), 'gelu_tanh', False, 1e-5, 1024,
                  True, 'last', 'adamw', 'linear', 0.95, 1e-8, 0.01, None, 'pack', _GPT_RECIPE),
    't5': Family('t5', 'encoder-decoder', ('span_corruption', 'prefix_lm', 'ul2'), 'gated-gelu',
                 True, 1e-6, 512, False, 'mean', 'adafactor', 'rsqrt', 0.95, 1e-8, 0.0, 1e-2,
                 'chunk', _T5_RECIPE),
}
NAMES = tuple(FAMILIES)


def get(name: str) -> Family:
  """The record of `name`; ConfigError naming model.family otherwise."""
  if name not in FAMILIES:
    raise ConfigError('model.family', name, f'one of {NAMES}')
  return FAMILIES[name]
