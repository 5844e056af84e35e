"""Analytic FLOPs per training step and per-device peaks, for tokens/s and MFU.

  counts = flops.count_params(boxed_params)          # from model.init / eval_shape
  step = flops.flops_per_step(config.model, counts, shapes)
  mfu = (step['model'] + step['head']) / seconds_per_step / (peak_per_device * devices)

The accounting is the peers' harness (benchmarks/peers/common.py) so that
benchmark figures line up:

  dense = 6 * N * tokens       N = non-embedding parameters (no embedding tables, no LM head)
  attn  = 12 * layers * (H*K) * context * tokens     (QK^T and AV: 2 matmuls x 2 FLOP x 3)
  head  = 6 * d_model * V * output_tokens            (the vocabulary projection)
  T5:  dense = 6 * ((N_enc + N_xkv) * B*S + (N_dec - N_xkv) * B*T)
       attn  = 12 * (H*K) * (L_enc * S*B*S + L_dec * (T*B*T + S*B*T))   (enc self, dec self, cross)
       N_xkv = the decoder's cross-attention key/value projections, which run over the
       B*S encoder tokens: 2 * d_model * H*K per decoder layer.

Task heads (`model.head` = sequence_classification | token_classification |
question_answering) run no vocabulary projection: `head` is their own layer (d_model x C,
or x 2 for spans) over the positions it sees (one pooled vector per row, or every
token), plus BERT's pooler (d_model x d_model, once per row) under cls pooling; their
params (and the pooler's) leave N.  T5 with a task head runs its encoder alone.

Forward + backward = 3 x forward.  Causal attention is counted in full (no /2), as in
PaLM's MFU.  `model` excludes the head (the peers' "mfu"); the MFU this codebase reports
includes it (`mfu`), with `mfu_excl_head` beside it.  For BERT with `predict_positions`
the head runs over the P predicted positions only.  A parameter counts as embedding
when its logical axes include `vocab`, `position` or `type_vocab` (word, position and
token-type tables, and an untied LM head); everything else is N.

Peaks are dense bfloat16 FLOP/s per device (vendor figures); MFU is measured
against them whatever `model.dtype` is.  Unknown devices (CPUs) report no MFU
unless `train.peak_flops` gives a peak.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from ptlm_jax import families

# device_kind substring -> dense bf16 peak FLOP/s per device (first match wins).
PEAK_FLOPS = (
    ('TPU v6', 918e12),        # Trillium (v6e)
    ('TPU v5 lite', 197e12),   # v5e
    ('TPU v5e', 197e12),
    ('TPU v5p', 459e12),
    ('TPU v5', 459e12),        # v5p reports 'TPU v5'
    ('TPU v4', 275e12),
    ('TPU v3', 123e12),
    ('H200', 989e12),
    ('H100', 989e12),          # SXM; the PCIe card is lower (756e12)
    ('A100', 312e12),
    ('L4', 121e12),
)
_EMBEDDING_AXES = ('vocab', 'position', 'type_vocab')
TASK_HEADS = ('sequence_classification', 'token_classification', 'question_answering')


def peak_flops_per_device(device_kind: str, override: float = 0.0) -> float:
  """`override` when > 0, else the table's peak for `device_kind`, else 0 (unknown)."""
  if override > 0:
    return float(override)
  for needle, peak in PEAK_FLOPS:
    if needle.lower() in device_kind.lower():
      return peak
  return 0.0


def count_params(boxed_params: Any) -> dict[str, int]:
  """Parameter counts from a params tree whose leaves are nn.LogicallyPartitioned boxes.

  Plain arrays (no logical names) count as non-embedding.  A leaf belongs to the
  decoder when a module on its path is named `decoder...` (T5).  `params_head` (a
  task head's `head/...`) and `params_pooler` (BERT's `pooler`) are also in N.
  """
  counts = dict(params_total=0, params_embedding=0, params_non_embedding=0,
                params_non_embedding_dec=0, params_head=0, params_pooler=0)
  is_box = lambda x: isinstance(x, nn.LogicallyPartitioned)
  for path, leaf in jax.tree_util.tree_leaves_with_path(boxed_params, is_leaf=is_box):
    names = tuple(leaf.names) if is_box(leaf) else ()
    value = leaf.value if is_box(leaf) else leaf
    size = int(value.size)
    counts['params_total'] += size
    if any(axis in _EMBEDDING_AXES for axis in names):
      counts['params_embedding'] += size
      continue
    counts['params_non_embedding'] += size
    keys = [str(getattr(k, 'key', getattr(k, 'name', ''))) for k in path]
    if keys and keys[0] == 'head':
      counts['params_head'] += size
    if 'pooler' in keys:
      counts['params_pooler'] += size
    if any(k.lower().startswith('decoder') for k in keys):
      counts['params_non_embedding_dec'] += size
  return counts


def flops_per_step(model_config, counts: dict[str, int], batch: int, length: int,
                   target_length: int = 0, output_length: int = 0) -> dict[str, float]:
  """FLOPs of one optimizer step over `batch` rows (the formulas of the module docstring).

  length: model input length (T5: encoder length S).  target_length: T5 decoder
  length T.  output_length: positions the LM head runs over (default: length, or T).
  """
  m = model_config
  width = m.num_heads * m.head_dim
  # The pooler runs only under a classification head, on one vector per row.
  head_params, pooler = counts.get('params_head', 0), counts.get('params_pooler', 0)
  n = counts['params_non_embedding'] - head_params - pooler
  task = m.get('head', 'lm') if hasattr(m, 'get') else getattr(m, 'head', 'lm')
  if task in TASK_HEADS:
    # The backbone over every input token (T5: the encoder alone), then the task layer.
    layers = m.num_layers
    dec = counts.get('params_non_embedding_dec', 0) if families.get(m.family).encoder_decoder else 0
    dense = 6 * (n - dec) * batch * length
    attn = 12 * layers * width * length * batch * length
    if task == 'sequence_classification':
      runs_pooler = families.get(m.family).bidirectional and m.get('pooling', 'cls') == 'cls'
      head = 6 * (head_params + (pooler if runs_pooler else 0)) * batch
    else:
      head = 6 * head_params * batch * length
    return dict(model=float(dense + attn), head=float(head))
  if families.get(m.family).encoder_decoder:
    s, t = length, target_length
    n_dec = counts['params_non_embedding_dec']
    xkv = min(2 * m.d_model * width * m.num_decoder_layers, n_dec)
    dense = 6 * ((n - n_dec + xkv) * batch * s + (n_dec - xkv) * batch * t)
    attn = 12 * width * (m.num_layers * s * batch * s
                         + m.num_decoder_layers * (t * batch * t + s * batch * t))
    head = 6 * m.d_model * m.vocab_size * batch * (output_length or t)
  else:
    dense = 6 * n * batch * length
    attn = 12 * m.num_layers * width * length * batch * length
    head = 6 * m.d_model * m.vocab_size * batch * (output_length or length)
  return dict(model=float(dense + attn), head=float(head))
