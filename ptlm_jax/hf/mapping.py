"""HF <-> ptlm_jax names, shapes and configs for BERT, GPT-2 and T5 (no torch needed).

A `Rule` ties one HF tensor (or a slice of one: GPT-2's fused c_attn) to one of our
params and says how the layouts differ.  The rule list of a family is a superset; the
params our module actually has (from `jax.eval_shape`, unrolled layout) select the rules
that apply, so BertModel / BertForMaskedLM / BertForSequenceClassification share one
list.  `hf_import.py` does the file I/O on top of this.

Kinds (our kernel shape S, its first n axes are inputs):
  copy       same shape                    (embeddings, norms, vocab bias)
  flat       HF [prod S]                   (q/k/v biases stored [H, K] here)
  linear<n>  torch Linear [out, in]        ours = W.T reshaped to S
  conv<n>    GPT-2 Conv1D [in, out]        ours = W reshaped to S
"""
from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np

from ptlm_jax import config_lib, errors

UserError = errors.UserError

# architecture -> (family, model.head, prefix of the backbone's tensors)
ARCHITECTURES = {
    'BertModel': ('bert', 'none', ''),
    'BertForMaskedLM': ('bert', 'lm', 'bert.'),
    'BertForPreTraining': ('bert', 'lm', 'bert.'),
    'BertForSequenceClassification': ('bert', 'sequence_classification', 'bert.'),
    'GPT2Model': ('gpt', 'none', ''),
    'GPT2LMHeadModel': ('gpt', 'lm', 'transformer.'),
    'T5ForConditionalGeneration': ('t5', 'lm', ''),
}
_ACTIVATIONS = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
                'relu': 'relu'}
# HF tensors that carry nothing we keep: causal-mask buffers, tied copies, the NSP head.
IGNORED_SUFFIXES = ('.attn.bias', '.attn.masked_bias', 'position_ids', 'embed_tokens.weight',
                    'cls.seq_relationship.weight', 'cls.seq_relationship.bias',
                    'cls.predictions.decoder.weight', 'cls.predictions.decoder.bias',
                    'lm_head.weight')


@dataclasses.dataclass(frozen=True)
class Rule:
  hf: str                # HF tensor name without the backbone prefix
  path: tuple            # our param path
  kind: str              # copy | flat | linear1 | linear2 | conv1 | conv2
  prefixed: bool = True  # lives under the backbone prefix ('bert.', 'transformer.')
  part: tuple = (0, 1)   # (i, n): slice i of n along the HF last axis


def hf_shape(rule: Rule, shape: tuple) -> tuple:
  """The HF tensor shape that holds our param of `shape` (whole tensor, all parts)."""
  kind, n = rule.kind.rstrip('12'), int(rule.kind[-1]) if rule.kind[-1].isdigit() else 0
  size_in, size_out = math.prod(shape[:n]), math.prod(shape[n:])
  out = {'copy': tuple(shape), 'flat': (math.prod(shape),), 'linear': (size_out, size_in),
         'conv': (size_in, size_out)}[kind]
  return out[:-1] + (out[-1] * rule.part[1],)


def to_ours(rule: Rule, tensor: np.ndarray, shape: tuple) -> np.ndarray:
  i, n = rule.part
  if n > 1:
    tensor = np.split(tensor, n, axis=-1)[i]
  if rule.kind.startswith('linear'):
    tensor = tensor.T
  return np.ascontiguousarray(tensor.reshape(shape), dtype=np.float32)


def to_hf(rule: Rule, param: np.ndarray) -> np.ndarray:
  """The HF layout of one param (one part of a fused tensor)."""
  param = np.asarray(param, np.float32)
  if rule.kind == 'copy':
    return param
  if rule.kind == 'flat':
    return param.reshape(-1)
  n = int(rule.kind[-1])
  matrix = param.reshape(math.prod(param.shape[:n]), -1)
  return np.ascontiguousarray(matrix.T if rule.kind.startswith('linear') else matrix)


def _norm(hf: str, path: tuple, bias: bool = True, prefixed: bool = True) -> list[Rule]:
  rules = [Rule(f'{hf}.weight', path + ('scale',), 'copy', prefixed)]
  if bias:
    rules.append(Rule(f'{hf}.bias', path + ('bias',), 'copy', prefixed))
  return rules


def _dense(hf: str, path: tuple, kind: str, bias: bool = True, prefixed: bool = True,
           bias_kind: str = 'copy') -> list[Rule]:
  rules = [Rule(f'{hf}.weight', path + ('kernel',), kind, prefixed)]
  if bias:
    rules.append(Rule(f'{hf}.bias', path + ('bias',), bias_kind, prefixed))
  return rules


def bert_rules(c) -> list[Rule]:
  r = [Rule('embeddings.word_embeddings.weight', ('token_embed', 'embedding'), 'copy'),
       Rule('embeddings.position_embeddings.weight', ('position_embed', 'embedding'), 'copy'),
       Rule('embeddings.token_type_embeddings.weight', ('type_embed', 'embedding'), 'copy')]
  r += _norm('embeddings.LayerNorm', ('embed_norm',))
  for i in range(c.num_layers):
    hf, us = f'encoder.layer.{i}', ('encoder', f'layers_{i}')
    for name in ('query', 'key', 'value'):
      r += _dense(f'{hf}.attention.self.{name}', us + ('attention', name), 'linear1',
                  bias_kind='flat')
    r += _dense(f'{hf}.attention.output.dense', us + ('attention', 'out'), 'linear2')
    r += _norm(f'{hf}.attention.output.LayerNorm', us + ('attention_norm',))
    r += _dense(f'{hf}.intermediate.dense', us + ('mlp', 'wi'), 'linear1')
    r += _dense(f'{hf}.output.dense', us + ('mlp', 'wo'), 'linear1')
    r += _norm(f'{hf}.output.LayerNorm', us + ('mlp_norm',))
  r += _dense('pooler.dense', ('pooler',), 'linear1')
  r += _dense('cls.predictions.transform.dense', ('mlm_head', 'transform'), 'linear1',
              prefixed=False)
  r += _norm('cls.predictions.transform.LayerNorm', ('mlm_head', 'norm'), prefixed=False)
  r.append(Rule('cls.predictions.bias', ('mlm_head', 'bias'), 'copy', prefixed=False))
  return r


def gpt_rules(c) -> list[Rule]:
  r = [Rule('wte.weight', ('token_embed', 'embedding'), 'copy'),
       Rule('wpe.weight', ('position_embed', 'embedding'), 'copy')]
  for i in range(c.num_layers):
    hf, us = f'h.{i}', ('decoder', f'layers_{i}')
    r += _norm(f'{hf}.ln_1', us + ('attention_norm',))
    for j, name in enumerate(('query', 'key', 'value')):  # one fused [D, 3HK] projection
      r.append(Rule(f'{hf}.attn.c_attn.weight', us + ('attention', name, 'kernel'), 'conv1',
                    part=(j, 3)))
      r.append(Rule(f'{hf}.attn.c_attn.bias', us + ('attention', name, 'bias'), 'flat',
                    part=(j, 3)))
    r += _dense(f'{hf}.attn.c_proj', us + ('attention', 'out'), 'conv2')
    r += _norm(f'{hf}.ln_2', us + ('mlp_norm',))
    r += _dense(f'{hf}.mlp.c_fc', us + ('mlp', 'wi'), 'conv1')
    r += _dense(f'{hf}.mlp.c_proj', us + ('mlp', 'wo'), 'conv1')
  r += _norm('ln_f', ('decoder', 'final_norm'))
  return r


def t5_rules(c) -> list[Rule]:
  r = [Rule('shared.weight', ('token_embed', 'embedding'), 'copy')]
  for stack, layers in (('encoder', c.num_layers), ('decoder', c.num_decoder_layers)):
    r.append(Rule(f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
                  (stack, 'relpos', 'embedding'), 'copy'))
    for i in range(layers):
      hf, us = f'{stack}.block.{i}.layer', (stack, f'layers_{i}')
      sublayers = [('SelfAttention', 'attention')]
      if stack == 'decoder':
        sublayers.append(('EncDecAttention', 'cross_attention'))
      for j, (hf_name, name) in enumerate(sublayers):
        for hf_proj, proj in (('q', 'query'), ('k', 'key'), ('v', 'value'), ('o', 'out')):
          r += _dense(f'{hf}.{j}.{hf_name}.{hf_proj}', us + (name, proj),
                      'linear2' if proj == 'out' else 'linear1', bias=False)
        r += _norm(f'{hf}.{j}.layer_norm', us + (f'{name}_norm',), bias=False)
      j = len(sublayers)
      for proj in ('wi', 'wi_0', 'wi_1', 'wo'):
        r += _dense(f'{hf}.{j}.DenseReluDense.{proj}', us + ('mlp', proj), 'linear1', bias=False)
      r += _norm(f'{hf}.{j}.layer_norm', us + ('mlp_norm',), bias=False)
    r += _norm(f'{stack}.final_layer_norm', (stack, 'final_norm'), bias=False)
  r += _dense('lm_head', ('lm_head',), 'linear1', bias=False)
  return r


def rules_for(model_config) -> list[Rule]:
  """All rules of the family; head modules put the backbone under `backbone/`."""
  rules = {'bert': bert_rules, 'gpt': gpt_rules, 't5': t5_rules}[model_config.family](model_config)
  if model_config.head in ('lm', 'none'):
    return rules
  rules = [dataclasses.replace(r, path=('backbone',) + r.path) for r in rules]
  return rules + _dense('classifier', ('head',), 'linear1', prefixed=False)


# ---------------------------------------------------------------------------
# Configs.

def _get(hf: dict, key: str, default=None, required: bool = True):
  if key in hf:
    return hf[key]
  if default is None and required:
    raise UserError(f'config.json: field {key!r} is missing')
  return default


def architecture_from_hf(hf: dict) -> str:
  """The supported HF class named by a config.json dict, or a UserError."""
  archs = hf.get('architectures') or []
  arch = archs[0] if archs else None
  if arch not in ARCHITECTURES:
    raise UserError(f'config.json: architectures={archs!r} is not supported: expected one of '
                    f'{sorted(ARCHITECTURES)}')
  return arch


def model_config_from_hf(hf: dict, tensor_names=()) -> ml_collections.ConfigDict:
  """Our `model` config group for an HF config.json dict (names of its tensors help)."""
  family, head, _ = ARCHITECTURES[architecture_from_hf(hf)]
  m = config_lib.base_config(family, 'tiny').model
  m.head = head
  if family == 'bert':
    if hf.get('position_embedding_type', 'absolute') != 'absolute':
      raise UserError(f"config.json: position_embedding_type={hf['position_embedding_type']!r} "
                      "is not supported: expected 'absolute'")
    act = _get(hf, 'hidden_act', 'gelu')
    m.vocab_size, m.d_model = _get(hf, 'vocab_size'), _get(hf, 'hidden_size')
    m.num_layers, m.num_heads = _get(hf, 'num_hidden_layers'), _get(hf, 'num_attention_heads')
    m.d_ff, m.max_len = _get(hf, 'intermediate_size'), _get(hf, 'max_position_embeddings')
    m.type_vocab_size = _get(hf, 'type_vocab_size', 2)
    m.layer_norm_eps = _get(hf, 'layer_norm_eps', 1e-12)
    m.dropout_rate = _get(hf, 'hidden_dropout_prob', 0.1)
    m.attention_dropout_rate = _get(hf, 'attention_probs_dropout_prob', 0.1)
    m.use_pooler = any(n.endswith('pooler.dense.weight') for n in tensor_names) or (
        head == 'none' and not tensor_names)
    if head == 'sequence_classification':
      m.num_classes = len(hf['id2label']) if 'id2label' in hf else _get(hf, 'num_labels', 2)
      m.pooling = 'cls'
  elif family == 'gpt':
    for key, ok in (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False),
                    ('add_cross_attention', False)):
      if hf.get(key, ok) != ok:
        raise UserError(f'config.json: {key}={hf[key]!r} is not supported: expected {ok!r}')
    act = _get(hf, 'activation_function', 'gelu_new')
    m.vocab_size, m.d_model = _get(hf, 'vocab_size'), _get(hf, 'n_embd')
    m.num_layers, m.num_heads = _get(hf, 'n_layer'), _get(hf, 'n_head')
    m.d_ff = hf.get('n_inner') or 4 * m.d_model
    m.max_len = _get(hf, 'n_positions')
    m.layer_norm_eps = _get(hf, 'layer_norm_epsilon', 1e-5)
    m.dropout_rate = _get(hf, 'resid_pdrop', 0.1)
    m.attention_dropout_rate = _get(hf, 'attn_pdrop', 0.1)
  else:
    proj = _get(hf, 'feed_forward_proj', 'relu')
    if proj not in ('relu', 'gated-gelu'):
      raise UserError(f"config.json: feed_forward_proj={proj!r} is not supported: expected "
                      "'relu' (T5 v1.0) or 'gated-gelu' (T5 v1.1)")
    act = proj
    m.tie_embeddings = bool(hf.get('tie_word_embeddings', True))
    if hf.get('scale_decoder_outputs', m.tie_embeddings) != m.tie_embeddings:
      raise UserError('config.json: tie_word_embeddings and scale_decoder_outputs differ; '
                      'expected both true (T5 v1.0) or both false (T5 v1.1)')
    m.vocab_size, m.d_model, m.head_dim = _get(hf, 'vocab_size'), _get(hf, 'd_model'), _get(hf, 'd_kv')
    m.d_ff, m.num_layers, m.num_heads = _get(hf, 'd_ff'), _get(hf, 'num_layers'), _get(hf, 'num_heads')
    m.num_decoder_layers = hf.get('num_decoder_layers') or m.num_layers
    m.relative_buckets = _get(hf, 'relative_attention_num_buckets', 32)
    m.relative_max_distance = _get(hf, 'relative_attention_max_distance', 128)
    m.layer_norm_eps = _get(hf, 'layer_norm_epsilon', 1e-6)
    m.dropout_rate = m.attention_dropout_rate = _get(hf, 'dropout_rate', 0.1)
  if family != 't5':
    if act not in _ACTIVATIONS:
      raise UserError(f'config.json: activation {act!r} is not supported: expected one of '
                      f'{sorted(_ACTIVATIONS)}')
    act = _ACTIVATIONS[act]
    m.head_dim = m.d_model // m.num_heads
    m.init_std = _get(hf, 'initializer_range', 0.02)
  m.activation = act
  config_lib.validate_model(m)
  return m


def architecture_of(m) -> str:
  """The HF class that holds exactly our params."""
  for arch, (family, head, _) in ARCHITECTURES.items():
    if (family, head) == (m.family, m.head) and arch != 'BertForPreTraining':
      return arch
  raise UserError(f'config.model.head={m.head!r} has no HF architecture for family '
                  f'{m.family!r}: expected one of lm, none (or sequence_classification for bert)')


def hf_config_from_model(m) -> dict:
  """An HF config.json dict for our `model` config group."""
  arch = architecture_of(m)
  if m.family != 't5' and m.num_heads * m.head_dim != m.d_model:
    raise UserError(f'config.model.head_dim={m.head_dim!r} cannot be written to HF: expected '
                    f'd_model / num_heads = {m.d_model // m.num_heads}')
  act = {v: k for k, v in _ACTIVATIONS.items() if k != 'gelu_pytorch_tanh'}
  if m.family != 't5' and m.activation not in act:
    raise UserError(f'config.model.activation={m.activation!r} cannot be written to HF '
                    f'{m.family}: expected one of {sorted(act)}')
  hf = {'architectures': [arch]}
  if m.family == 'bert':
    hf.update(model_type='bert', vocab_size=m.vocab_size, hidden_size=m.d_model,
              num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads,
              intermediate_size=m.d_ff, hidden_act=act[m.activation],
              hidden_dropout_prob=m.dropout_rate,
              attention_probs_dropout_prob=m.attention_dropout_rate,
              max_position_embeddings=m.max_len, type_vocab_size=m.type_vocab_size,
              initializer_range=m.init_std, layer_norm_eps=m.layer_norm_eps, pad_token_id=0,
              position_embedding_type='absolute')
    if m.head == 'sequence_classification':
      hf.update(num_labels=m.num_classes,
                id2label={str(i): f'LABEL_{i}' for i in range(m.num_classes)},
                label2id={f'LABEL_{i}': i for i in range(m.num_classes)})
  elif m.family == 'gpt':
    hf.update(model_type='gpt2', vocab_size=m.vocab_size, n_embd=m.d_model, n_layer=m.num_layers,
              n_head=m.num_heads, n_inner=m.d_ff, n_positions=m.max_len,
              activation_function=act[m.activation], resid_pdrop=m.dropout_rate,
              embd_pdrop=m.dropout_rate, attn_pdrop=m.attention_dropout_rate,
              layer_norm_epsilon=m.layer_norm_eps, initializer_range=m.init_std,
              tie_word_embeddings=True)
  else:
    if m.activation not in ('relu', 'gated-gelu'):
      raise UserError(f'config.model.activation={m.activation!r} cannot be written to HF T5: '
                      "expected 'relu' or 'gated-gelu'")
    hf.update(model_type='t5', vocab_size=m.vocab_size, d_model=m.d_model, d_kv=m.head_dim,
              d_ff=m.d_ff, num_layers=m.num_layers, num_decoder_layers=m.num_decoder_layers,
              num_heads=m.num_heads, relative_attention_num_buckets=m.relative_buckets,
              relative_attention_max_distance=m.relative_max_distance,
              dropout_rate=m.dropout_rate, layer_norm_epsilon=m.layer_norm_eps,
              feed_forward_proj=m.activation, tie_word_embeddings=bool(m.tie_embeddings),
              is_encoder_decoder=True, decoder_start_token_id=0, pad_token_id=0,
              eos_token_id=1)
  return hf
