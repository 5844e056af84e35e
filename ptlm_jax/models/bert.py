"""BERT: post-LN bidirectional encoder with token types, an MLM head and a [CLS] pooler.

Embeddings (token + learned position + token type) -> LayerNorm -> N post-LN layers
(x = LN(x + Attn(x)); x = LN(x + MLP(x)), exact GELU).  The MLM head is dense + GELU +
LayerNorm, then the tied token embedding plus a vocab bias; the pooler is dense + tanh
on each row's first token.  Matches HF `BertModel` / `BertForMaskedLM` numerically.

  model = Bert(config.model)   # usually via models.build_model
  logits_BxLxV = model.apply({'params': p}, tokens=..., segment_ids=..., positions=...)
  h_BxLxD = model.apply({'params': p}, tokens, segment_ids, positions, method='encode')

Parameters: token_embed, position_embed, type_embed, embed_norm, encoder/layers_i/...,
pooler (only when `use_pooler` or a head pools), mlm_head (only with head='lm').

Legend: B batch, L length, P predicted positions, D d_model, V vocab.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ptlm_jax.models import attention, layers, stack


class BertLayer(nn.Module):
  """x = LN(x + Adapter(Dropout(Attn(x)))); x = LN(x + Adapter(Dropout(MLP(x)))).

  (Adapter = identity unless `model.adapter_dim` > 0.)
  """
  config: Any
  deterministic: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x_BxLxD, mask_Bx1xLxL):
    c, det = self.config, self.deterministic
    h_BxLxD = attention.Attention(c, deterministic=det, name='attention')(
        x_BxLxD, x_BxLxD, mask_Bx1xLxL)
    h_BxLxD = layers.adapter(c, 'attention_adapter')(
        layers.Dropout(c.dropout_rate)(h_BxLxD, deterministic=det))
    x_BxLxD = layers.norm(c, 'attention_norm')(x_BxLxD + h_BxLxD)
    h_BxLxD = layers.Mlp(c, deterministic=det, name='mlp')(x_BxLxD)
    h_BxLxD = layers.adapter(c, 'mlp_adapter')(
        layers.Dropout(c.dropout_rate)(h_BxLxD, deterministic=det))
    x_BxLxD = layers.norm(c, 'mlp_norm')(x_BxLxD + h_BxLxD)
    return nn.with_logical_constraint(x_BxLxD, ('batch', 'length', 'embed')), None


class BertEncoder(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, x_BxLxD, segment_ids_BxL, deterministic: bool):
    # Once per stack: the mask as the attention kernel takes it (attention.stack_mask).
    bias_Bx1xLxL = attention.stack_mask(
        self.config, attention.segment_mask(segment_ids_BxL, segment_ids_BxL), deterministic)
    return stack.apply_layers(BertLayer, self.config, self.config.num_layers, x_BxLxD,
                              bias_Bx1xLxL, deterministic=deterministic)


class MlmHead(nn.Module):
  """dense + activation + LayerNorm; returns those features and the per-token bias.

  The logits are features @ (tied embedding).T + bias (`Bert.lm_head_inputs`).
  """
  config: Any

  @nn.compact
  def __call__(self, h_BxPxD):
    c = self.config
    h_BxPxD = layers.dense(c, c.d_model, ('embed', 'mlp'), 'dense', name='transform')(h_BxPxD)
    h_BxPxD = layers.norm(c, 'norm')(layers.ACTIVATIONS[c.activation](h_BxPxD))
    bias_V = self.param('bias', nn.with_logical_partitioning(nn.initializers.zeros, ('vocab',)),
                        (c.vocab_size,), layers.param_dtype(c))
    return h_BxPxD, bias_V


class Bert(nn.Module):
  """BERT encoder; `__call__` gives MLM logits (or hidden states with head='none')."""
  config: Any

  def setup(self):
    c = self.config
    self.token_embed = layers.embedding(c, c.vocab_size, ('vocab', 'embed'))
    self.position_embed = layers.embedding(c, c.max_len, ('position', 'embed'))
    self.type_embed = layers.embedding(c, c.type_vocab_size, ('type_vocab', 'embed'))
    self.embed_norm = layers.norm(c)
    self.embed_dropout = layers.Dropout(c.dropout_rate)
    self.encoder = BertEncoder(c)
    self.pooler = layers.dense(c, c.d_model, ('embed', 'mlp'), 'dense')
    self.mlm_head = MlmHead(c)

  def encode(self, tokens, segment_ids, positions, token_types=None, deterministic=True):
    """Final hidden states h_BxLxD."""
    if token_types is None:
      token_types = jnp.zeros_like(tokens)
    x_BxLxD = (self.token_embed(tokens) + self.position_embed(positions)
               + self.type_embed(token_types))
    x_BxLxD = self.embed_dropout(self.embed_norm(x_BxLxD), deterministic=deterministic)
    return self.encoder(x_BxLxD, segment_ids, deterministic)

  def pool(self, h_BxLxD):
    """Pooled [CLS]: tanh(dense(h of each row's first token)) -> BxD."""
    return jnp.tanh(self.pooler(h_BxLxD[:, 0]))

  def __call__(self, tokens, segment_ids, positions, token_types=None, predict_positions=None,
               deterministic=True):
    if self.config.head == 'none':
      h_BxLxD = self.encode(tokens, segment_ids, positions, token_types, deterministic)
      if self.config.use_pooler and self.is_initializing():
        self.pool(h_BxLxD)  # create the pooler's params (HF BertModel has one)
      return h_BxLxD
    h_BxPxD, table_VxD, bias_V = self.lm_head_inputs(tokens, segment_ids, positions, token_types,
                                                     predict_positions, deterministic)
    return layers.attend(h_BxPxD, table_VxD) + bias_V.astype(jnp.float32)

  def lm_head_inputs(self, tokens, segment_ids, positions, token_types=None,
                     predict_positions=None, deterministic=True):
    """(h_BxPxD, table_VxD, bias_V): `__call__`'s logits are h @ table.T + bias.

    For a loss that projects and reduces chunk by chunk (losses.projected_cross_entropy).
    """
    h_BxLxD = self.encode(tokens, segment_ids, positions, token_types, deterministic)
    if self.config.use_pooler and self.is_initializing():
      self.pool(h_BxLxD)  # create the pooler's params (HF BertModel has one)
    if predict_positions is not None:  # only the P masked positions reach the vocab matmul
      h_BxLxD = jnp.take_along_axis(h_BxLxD, predict_positions[..., None], axis=1)
    h_BxPxD, bias_V = self.mlm_head(h_BxLxD)
    return h_BxPxD, self.token_embed.embedding, bias_V
