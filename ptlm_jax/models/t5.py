"""T5 encoder-decoder (v1.0 and v1.1): pre-RMSNorm layers, relative position bias, no biases.

Encoder: shared embedding -> N layers (x += Attn(RMS(x)) with a bidirectional bucketed
relative bias; x += MLP(RMS(x))) -> RMSNorm.  Decoder: the same with a causal bias and a
cross-attention sublayer, then RMSNorm and the LM head.  One bias table per stack is
shared by its layers; attention logits are unscaled (the init folds it in).
  v1.0 (`activation='relu'`, `tie_embeddings=True`): tied head, decoder output scaled by
       d_model**-0.5 first.
  v1.1 (`activation='gated-gelu'`, `tie_embeddings=False`): untied `lm_head`, no scale.
Matches HF `T5ForConditionalGeneration` numerically.

  model = T5(config.model)    # usually via models.build_model
  logits_BxTxV = model.apply({'params': p}, encoder_tokens=..., encoder_segment_ids=...,
      encoder_positions=..., decoder_tokens=..., decoder_segment_ids=..., decoder_positions=...)

Generation (see INTERFACES.md): `encode` once, then `decode(..., decode=True)` with the
encoder output on the first call (its keys/values are cached per layer) and
`encoded=None` on every later step.

Legend: B batch, S encoder length, T decoder length, D d_model, H heads, V vocab.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptlm_jax.models import attention, layers, stack


class T5Layer(nn.Module):
  """x += Drop(SelfAttn(RMS(x))); [x += Drop(CrossAttn(RMS(x), enc))]; x += Drop(MLP(RMS(x))).

  With `model.adapter_dim` > 0 an adapter wraps the self-attention and MLP outputs
  (after Drop); cross-attention has none (Houlsby's two adapters per layer).
  """
  config: Any
  deterministic: bool = True
  decode: bool = False
  is_decoder: bool = False
  is_causal: bool = False  # the self-attention mask is the segment mask alone (T5Decoder)

  @nn.compact
  def __call__(self, x_BxTxD, mask_bias_BxHxTxT, bias_BxHxTxT, cache_index, encoded_BxSxD,
               cross_mask_bias_Bx1xTxS):
    # mask_bias: attention.stack_mask (a boolean mask for the fused kernel, else the
    # additive bias); bias: the relative-position bias to add, or None.
    c, det = self.config, self.deterministic
    drop = lambda h: layers.Dropout(c.dropout_rate)(h, deterministic=det)
    h_BxTxD = layers.norm(c, 'attention_norm')(x_BxTxD)
    x_BxTxD = x_BxTxD + layers.adapter(c, 'attention_adapter')(drop(attention.Attention(
        c, deterministic=det, decode=self.decode, is_causal=self.is_causal, name='attention')(
            h_BxTxD, h_BxTxD, mask_bias_BxHxTxT, bias_BxHxTxT, cache_index)))
    if self.is_decoder:
      h_BxTxD = layers.norm(c, 'cross_attention_norm')(x_BxTxD)
      x_BxTxD = x_BxTxD + drop(attention.Attention(
          c, cross=True, deterministic=det, decode=self.decode, name='cross_attention')(
              h_BxTxD, encoded_BxSxD, cross_mask_bias_Bx1xTxS))
    h_BxTxD = layers.Mlp(c, deterministic=det, name='mlp')(layers.norm(c, 'mlp_norm')(x_BxTxD))
    x_BxTxD = x_BxTxD + layers.adapter(c, 'mlp_adapter')(drop(h_BxTxD))
    return nn.with_logical_constraint(x_BxTxD, ('batch', 'length', 'embed')), None


def slot_relative_bias(config, bidirectional: bool, q_len: int, k_len: int) -> jax.Array:
  """The relative-position bias [1, H, T, S] from slot indices, the same for every row.

  Inside a document positions run with the slots (positions restart at 0 per document,
  `objectives/rows.py`), so key position - query position = key slot - query slot, and
  pairs across documents are masked anyway: the bias of slot distances is the bias of
  position distances wherever it counts.  One [H, T, S] gather instead of a per-row
  [B, T, S] gather (and its scatter in the backward).  Call inside a stack's compact
  method: the table is that stack's `relpos`.
  """
  q_slots_1xT, k_slots_1xS = jnp.arange(q_len)[None], jnp.arange(k_len)[None]
  return layers.RelativePositionBias(config, bidirectional=bidirectional, name='relpos')(
      q_slots_1xT, k_slots_1xS)


class T5Encoder(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, x_BxSxD, segment_ids_BxS, positions_BxS, deterministic: bool):
    c = self.config
    del positions_BxS  # see slot_relative_bias
    mask_bias_Bx1xSxS = attention.stack_mask(
        c, attention.segment_mask(segment_ids_BxS, segment_ids_BxS), deterministic)
    bias_1xHxSxS = slot_relative_bias(c, True, segment_ids_BxS.shape[1],
                                      segment_ids_BxS.shape[1])
    x_BxSxD = layers.Dropout(c.dropout_rate)(x_BxSxD, deterministic=deterministic)
    x_BxSxD = stack.apply_layers(T5Layer, c, c.num_layers, x_BxSxD, mask_bias_Bx1xSxS,
                                 bias_1xHxSxS, None, None, None, deterministic=deterministic)
    x_BxSxD = layers.norm(c, 'final_norm')(x_BxSxD)
    return layers.Dropout(c.dropout_rate)(x_BxSxD, deterministic=deterministic)


class T5Decoder(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, y_BxTxD, segment_ids_BxT, positions_BxT, encoded_BxSxD,
               encoder_segment_ids_BxS, deterministic: bool, decode: bool):
    c = self.config
    t = segment_ids_BxT.shape[1]
    if decode:
      index, k_segs_BxL, k_pos_BxL, q_slots_BxT, k_slots_BxL = attention.DecodeState(
          name='state')(segment_ids_BxT, positions_BxT)
      if encoded_BxSxD is not None:  # first call: remember the encoder's segment ids
        self.put_variable('cache', 'encoder_segment_ids', encoder_segment_ids_BxS.astype(jnp.int32))
      encoder_segment_ids_BxS = self.get_variable('cache', 'encoder_segment_ids')
    else:
      index, k_segs_BxL, k_pos_BxL = None, segment_ids_BxT, positions_BxT
      q_slots_BxT = k_slots_BxL = jnp.broadcast_to(jnp.arange(t), segment_ids_BxT.shape)
    # The fused kernel applies causality itself outside decoding (attention.stack_mask).
    is_causal = attention.fused_implementation(c, deterministic) is not None and not decode
    if is_causal:
      allowed_Bx1xTxL = attention.segment_mask(segment_ids_BxT, segment_ids_BxT)
    else:
      allowed_Bx1xTxL = attention.decoder_mask(segment_ids_BxT, k_segs_BxL, q_slots_BxT,
                                               k_slots_BxL)
    mask_bias_Bx1xTxL = attention.stack_mask(c, allowed_Bx1xTxL, deterministic)
    if decode:  # cached slots of several documents: distances from the stored positions
      bias_BxHxTxL = layers.RelativePositionBias(c, bidirectional=False, name='relpos')(
          positions_BxT, k_pos_BxL)
    else:
      bias_BxHxTxL = slot_relative_bias(c, False, t, t)
    cross_bias_Bx1xTxS = attention.stack_mask(
        c, attention.segment_mask(segment_ids_BxT, encoder_segment_ids_BxS), deterministic)
    y_BxTxD = layers.Dropout(c.dropout_rate)(y_BxTxD, deterministic=deterministic)
    y_BxTxD = stack.apply_layers(T5Layer, c, c.num_decoder_layers, y_BxTxD, mask_bias_Bx1xTxL,
                                 bias_BxHxTxL, index, encoded_BxSxD, cross_bias_Bx1xTxS,
                                 deterministic=deterministic, decode=decode, is_decoder=True,
                                 is_causal=is_causal)
    y_BxTxD = layers.norm(c, 'final_norm')(y_BxTxD)
    return layers.Dropout(c.dropout_rate)(y_BxTxD, deterministic=deterministic)


class T5(nn.Module):
  """T5 encoder-decoder; `__call__` gives decoder logits (hidden states with head='none')."""
  config: Any

  def setup(self):
    c = self.config
    self.token_embed = layers.embedding(c, c.vocab_size, ('vocab', 'embed'))
    self.encoder = T5Encoder(c)
    self.decoder = T5Decoder(c)
    if not c.tie_embeddings and c.head == 'lm':
      self.lm_head = layers.dense(c, c.vocab_size, ('embed', 'vocab'), 'lm_head', use_bias=False,
                                   float32_out=True)

  def encode(self, encoder_tokens, encoder_segment_ids, encoder_positions, deterministic=True):
    """Encoder output encoded_BxSxD (after the final RMSNorm)."""
    return self.encoder(self.token_embed(encoder_tokens), encoder_segment_ids, encoder_positions,
                        deterministic)

  def decode(self, encoded, encoder_segment_ids, decoder_tokens, decoder_segment_ids,
             decoder_positions, decode=False, deterministic=True):
    """Decoder logits_BxTxV; with decode=True, `encoded=None` reads the cached cross K/V."""
    c = self.config
    y_BxTxD = self.decoder(self.token_embed(decoder_tokens), decoder_segment_ids,
                           decoder_positions, encoded, encoder_segment_ids, deterministic, decode)
    if c.head == 'none':
      return y_BxTxD
    if not c.tie_embeddings:
      return self.lm_head(y_BxTxD)
    return layers.attend(self._tied_scale(y_BxTxD), self.token_embed.embedding)

  def _tied_scale(self, y_BxTxD):
    # v1.0 ties the head to the input embedding, whose init (std 1) is far larger than a
    # fan-in init: rescale so logits start at unit scale.
    return y_BxTxD * (self.config.d_model ** -0.5)

  def lm_head_inputs(self, encoder_tokens, encoder_segment_ids, encoder_positions, decoder_tokens,
                     decoder_segment_ids, decoder_positions, deterministic=True):
    """(h_BxTxD, table_VxD, None): `__call__`'s logits are h @ table.T.

    For a loss that projects and reduces chunk by chunk (losses.projected_cross_entropy).
    v1.1's untied `lm_head` kernel (D x V) comes back transposed; XLA folds the transpose
    into the matmuls.
    """
    c = self.config
    encoded_BxSxD = self.encode(encoder_tokens, encoder_segment_ids, encoder_positions,
                                deterministic)
    y_BxTxD = self.decoder(self.token_embed(decoder_tokens), decoder_segment_ids,
                           decoder_positions, encoded_BxSxD, encoder_segment_ids, deterministic,
                           False)
    if c.tie_embeddings:
      return self._tied_scale(y_BxTxD), self.token_embed.embedding, None
    if self.is_initializing():
      self.lm_head(y_BxTxD)  # creates the kernel
    return y_BxTxD, nn.unbox(self.lm_head.variables['params']['kernel']).T, None

  def __call__(self, encoder_tokens, encoder_segment_ids, encoder_positions, decoder_tokens,
               decoder_segment_ids, decoder_positions, decode=False, deterministic=True):
    encoded_BxSxD = self.encode(encoder_tokens, encoder_segment_ids, encoder_positions,
                                deterministic)
    return self.decode(encoded_BxSxD, encoder_segment_ids, decoder_tokens, decoder_segment_ids,
                       decoder_positions, decode, deterministic)
