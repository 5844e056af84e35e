"""GPT-2: pre-LN causal decoder with learned positions, a final LayerNorm and a tied LM head.

Embeddings (token + learned position) -> N pre-LN layers (x += Attn(LN(x));
x += MLP(LN(x)), tanh-GELU) -> LayerNorm -> logits against the token embedding.  Matches
HF `GPT2LMHeadModel` numerically.

  model = Gpt(config.model)   # usually via models.build_model
  logits_BxLxV = model.apply({'params': p}, tokens=..., segment_ids=..., positions=...)

Decode mode (see INTERFACES.md): `cache = models.init_cache(model, batch, max_len)`, then
each call `model.apply({'params': p, 'cache': cache}, tokens_BxT, segment_ids_BxT,
positions_BxT, decode=True, mutable=['cache'])` appends T tokens and returns their logits.

Legend: B batch, L length (T: tokens in this call), D d_model, V vocab.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ptlm_jax.models import attention, layers, stack


class GptLayer(nn.Module):
  """x += Adapter(Dropout(Attn(LN(x)))); x += Adapter(Dropout(MLP(LN(x)))) (adapters optional)."""
  config: Any
  deterministic: bool = True
  decode: bool = False
  is_causal: bool = False  # the mask is the segment mask alone (GptDecoder)

  @nn.compact
  def __call__(self, x_BxTxD, mask_Bx1xTxL, cache_index):
    c, det = self.config, self.deterministic
    h_BxTxD = layers.norm(c, 'attention_norm')(x_BxTxD)
    h_BxTxD = attention.Attention(c, deterministic=det, decode=self.decode,
                                  is_causal=self.is_causal, name='attention')(
        h_BxTxD, h_BxTxD, mask_Bx1xTxL, None, cache_index)
    x_BxTxD = x_BxTxD + layers.adapter(c, 'attention_adapter')(
        layers.Dropout(c.dropout_rate)(h_BxTxD, deterministic=det))
    h_BxTxD = layers.Mlp(c, deterministic=det, name='mlp')(layers.norm(c, 'mlp_norm')(x_BxTxD))
    x_BxTxD = x_BxTxD + layers.adapter(c, 'mlp_adapter')(
        layers.Dropout(c.dropout_rate)(h_BxTxD, deterministic=det))
    return nn.with_logical_constraint(x_BxTxD, ('batch', 'length', 'embed')), None


class GptDecoder(nn.Module):
  """The layer stack and final LayerNorm, with the causal / prefix / cached mask."""
  config: Any

  @nn.compact
  def __call__(self, x_BxTxD, segment_ids_BxT, prefix_mask_BxT, deterministic, decode):
    c = self.config
    t = segment_ids_BxT.shape[1]
    if decode:
      index, k_segs_BxL, _, q_slots_BxT, k_slots_BxL = attention.DecodeState(name='state')(
          segment_ids_BxT, jnp.zeros_like(segment_ids_BxT))
      k_prefix_BxL = None
      if prefix_mask_BxT is not None:  # earlier slots precede every query anyway
        k_prefix_BxL = jax.lax.dynamic_update_slice(
            jnp.zeros(k_segs_BxL.shape, bool), prefix_mask_BxT.astype(bool), (0, index))
    else:
      index, k_segs_BxL, k_prefix_BxL = None, segment_ids_BxT, prefix_mask_BxT
      q_slots_BxT = k_slots_BxL = jnp.broadcast_to(jnp.arange(t), segment_ids_BxT.shape)
    q_prefix_BxT = None if prefix_mask_BxT is None else prefix_mask_BxT.astype(bool)
    # Once per stack: the mask as the attention kernel takes it (attention.stack_mask).  The
    # fused kernel applies causality itself where rows are plainly causal (no cache, no prefix).
    is_causal = (attention.fused_implementation(c, deterministic) is not None and not decode
                 and prefix_mask_BxT is None)
    if is_causal:
      allowed_Bx1xTxL = attention.segment_mask(segment_ids_BxT, segment_ids_BxT)
    else:
      allowed_Bx1xTxL = attention.decoder_mask(segment_ids_BxT, k_segs_BxL, q_slots_BxT,
                                               k_slots_BxL, q_prefix_BxT, k_prefix_BxL)
    mask_Bx1xTxL = attention.stack_mask(c, allowed_Bx1xTxL, deterministic)
    x_BxTxD = stack.apply_layers(GptLayer, c, c.num_layers, x_BxTxD, mask_Bx1xTxL, index,
                                 deterministic=deterministic, decode=decode, is_causal=is_causal)
    return layers.norm(c, 'final_norm')(x_BxTxD)


class Gpt(nn.Module):
  """GPT-2 decoder; `__call__` gives next-token logits (hidden states with head='none')."""
  config: Any

  def setup(self):
    c = self.config
    self.token_embed = layers.embedding(c, c.vocab_size, ('vocab', 'embed'))
    self.position_embed = layers.embedding(c, c.max_len, ('position', 'embed'))
    self.embed_dropout = layers.Dropout(c.dropout_rate)
    self.decoder = GptDecoder(c)

  def encode(self, tokens, segment_ids, positions, prefix_mask=None, deterministic=True,
             decode=False):
    """Final (post-LayerNorm) hidden states h_BxLxD."""
    x_BxLxD = self.token_embed(tokens) + self.position_embed(positions)
    x_BxLxD = self.embed_dropout(x_BxLxD, deterministic=deterministic)
    return self.decoder(x_BxLxD, segment_ids, prefix_mask, deterministic, decode)

  def __call__(self, tokens, segment_ids, positions, prefix_mask=None, decode=False,
               deterministic=True):
    h_BxLxD = self.encode(tokens, segment_ids, positions, prefix_mask, deterministic, decode)
    if self.config.head == 'none':
      return h_BxLxD
    return layers.attend(h_BxLxD, self.token_embed.embedding)

  def lm_head_table(self):
    """The [V, D] table `__call__`'s logits are taken against (the token embedding)."""
    return self.token_embed.embedding

  def lm_head_inputs(self, tokens, segment_ids, positions, prefix_mask=None, deterministic=True):
    """(h_BxLxD, table_VxD, None): `__call__`'s logits are h @ table.T.

    For a loss that projects and reduces chunk by chunk (losses.projected_cross_entropy).
    """
    h_BxLxD = self.encode(tokens, segment_ids, positions, prefix_mask, deterministic)
    return h_BxLxD, self.token_embed.embedding, None
