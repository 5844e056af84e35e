"""Partition labels against hand-written expectations; rule syntax; the parameter report.

Everything here is plain Python on small trees of numpy arrays (no model, no compile).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ptlm_jax import config_lib, errors
from ptlm_jax.peft import lora as lora_lib, partitions as peft
from ptlm_jax.training import optim


def _peft(**fields):
  f = config_lib.base_config('gpt', 'tiny').peft
  f.update(fields)
  return f


def _tree(scanned: bool = False, layers: int = 3):
  """A BERT-like tree: embeddings, a 3-layer encoder (or its scanned form), a task head."""
  w = lambda *shape: np.zeros(shape, np.float32)
  layer = lambda n=(): {'attention': {'query': {'kernel': w(*n, 4, 2, 2)}},
                        'attention_norm': {'scale': w(*n, 4)},
                        'mlp': {'wi': {'kernel': w(*n, 4, 8)}}}
  stack = ({'layers': layer((layers,))} if scanned
           else {f'layers_{i}': layer() for i in range(layers)})
  return {'backbone': {'token_embed': {'embedding': w(16, 4)}, 'embed_norm': {'scale': w(4)},
                       'encoder': {**stack, 'relpos': {'embedding': w(8, 2)}},
                       'final_norm': {'scale': w(4)}},
          'head': {'kernel': w(4, 3), 'bias': w(3)}}


def _layer_labels(labels, i):
  return labels['backbone']['encoder'][f'layers_{i}']


def test_rules_first_match_wins_and_default_trains():
  rules = 'layers_0/=freeze; attention=lr*0.5; .*norm=freeze'
  labels = peft.param_labels(_tree(), _peft(rules=rules))
  assert _layer_labels(labels, 0) == {'attention': {'query': {'kernel': 'freeze'}},
                                      'attention_norm': {'scale': 'freeze'},
                                      'mlp': {'wi': {'kernel': 'freeze'}}}
  # 'attention' matches attention_norm too, and comes before '.*norm'.
  assert _layer_labels(labels, 1) == {'attention': {'query': {'kernel': 'lr*0.5'}},
                                      'attention_norm': {'scale': 'lr*0.5'},
                                      'mlp': {'wi': {'kernel': 'train'}}}
  assert labels['backbone']['final_norm'] == {'scale': 'freeze'}
  assert labels['head'] == {'kernel': 'train', 'bias': 'train'}


@pytest.mark.parametrize('bad', ['layers_0/', 'x=thaw', '=freeze', '([=freeze', 'a=lr*', 'a=lr*1e'])
def test_bad_rules_are_config_errors(bad):
  with pytest.raises(errors.ConfigError, match='peft.rules'):
    peft.parse_rules(bad)


def test_bad_lora_targets_regex_is_a_config_error():
  with pytest.raises(errors.ConfigError, match='peft.lora_targets'):
    peft.check_config(_peft(lora_targets='(query'))


def test_freeze_embeddings_and_bottom_layers():
  labels = peft.param_labels(_tree(), _peft(freeze_embeddings=True, freeze_layers=2))
  b = labels['backbone']
  assert b['token_embed'] == {'embedding': 'freeze'} and b['embed_norm'] == {'scale': 'freeze'}
  for i, expected in ((0, 'freeze'), (1, 'freeze'), (2, 'train')):
    assert set(peft.flatten(_layer_labels(labels, i)).values()) == {expected}
  assert b['encoder']['relpos'] == {'embedding': 'freeze'}  # counts as layer 0 (HF: block 0)
  assert b['final_norm'] == {'scale': 'train'} and labels['head']['kernel'] == 'train'


def test_layerwise_lr_decay_counts_depth_from_the_top():
  labels = peft.param_labels(_tree(), _peft(layerwise_lr_decay=0.5))
  b = labels['backbone']
  # 3 layers: layer i gets 0.5^(3 - i); embeddings 0.5^4; above the top 1.
  assert b['token_embed']['embedding'] == b['embed_norm']['scale'] == 'lr*0.0625'
  assert _layer_labels(labels, 0)['mlp']['wi']['kernel'] == 'lr*0.125'
  assert _layer_labels(labels, 1)['attention_norm']['scale'] == 'lr*0.25'
  assert _layer_labels(labels, 2)['attention']['query']['kernel'] == 'lr*0.5'
  assert b['encoder']['relpos']['embedding'] == 'lr*0.125'
  assert b['final_norm']['scale'] == labels['head']['bias'] == 'train'
  # Rules set the base rate that LLRD then scales.
  labels = peft.param_labels(_tree(), _peft(layerwise_lr_decay=0.5, rules='head=lr*10'))
  assert labels['head']['kernel'] == 'lr*10.0'


def test_scanned_layers_get_per_layer_factors():
  labels = peft.param_labels(_tree(scanned=True), _peft(freeze_layers=1, layerwise_lr_decay=0.5))
  scanned = labels['backbone']['encoder']['layers']
  assert set(peft.flatten(scanned).values()) == {'lr*0.0,0.25,0.5'}
  labels = peft.param_labels(_tree(scanned=True), _peft(freeze_layers=3))
  assert set(peft.flatten(labels['backbone']['encoder']['layers']).values()) == {'freeze'}


def test_methods_imply_their_trainable_sets():
  tree = _tree()
  tree['backbone']['encoder']['layers_1']['mlp_adapter'] = {'down': {'kernel': np.zeros((4, 2))}}
  tree['backbone']['encoder']['layers_1']['attention']['prefix'] = {'key': np.zeros((3, 2, 2))}
  tree['lora'] = {'backbone': {'encoder': {'layers_1': {'attention': {'query': {'kernel': {
      'a': np.zeros((4, 2)), 'b': np.zeros((2, 2, 2))}}}}}}}
  trained = lambda method: sorted(p for p, label in peft.flatten(
      peft.param_labels(tree, _peft(method=method))).items() if label != 'freeze')
  head = ['head/bias', 'head/kernel']
  assert trained('lora') == head + ['lora/backbone/encoder/layers_1/attention/query/kernel/a',
                                    'lora/backbone/encoder/layers_1/attention/query/kernel/b']
  assert trained('prefix') == ['backbone/encoder/layers_1/attention/prefix/key'] + head
  norms = ['backbone/embed_norm/scale', 'backbone/encoder/layers_0/attention_norm/scale',
           'backbone/encoder/layers_1/attention_norm/scale',
           'backbone/encoder/layers_1/mlp_adapter/down/kernel',
           'backbone/encoder/layers_2/attention_norm/scale', 'backbone/final_norm/scale']
  assert trained('adapter') == norms + head
  # freeze_layers reaches the LoRA factors of the frozen layers as well.
  labels = peft.param_labels(tree, _peft(method='lora', freeze_layers=2))
  assert set(peft.flatten(labels['lora']).values()) == {'freeze'}


def test_partition_and_combine_round_trip():
  tree = _tree()
  mask = peft.trainable_mask(peft.param_labels(tree, _peft(freeze_layers=2)))
  trainable, frozen = peft.partition(tree, mask)
  assert 'layers_0' not in trainable['backbone']['encoder'] and 'head' not in frozen
  assert sorted(peft.flatten(peft.combine(trainable, frozen))) == sorted(peft.flatten(tree))


def test_per_layer_factors_scale_updates_row_by_row():
  c = config_lib.base_config('gpt', 'tiny')
  c.optim.update(optimizer='sgd', momentum=0.0, lr=1.0, warmup_steps=0, decay='constant',
                 weight_decay=0.0, grad_clip_norm=1.0)
  params = {'w': jnp.ones((3, 2)), 'b': jnp.ones((2,))}
  tx = optim.make_optimizer(c, params, {'w': 'lr*0.0,0.5,1.0', 'b': 'train'})
  grads = {'w': jnp.full((3, 2), 0.5), 'b': jnp.full((2,), 0.5)}
  updates, _ = tx.update(grads, tx.init(params), params)
  # The frozen row's gradient does not count in the clipping norm: sqrt(6 * 0.25) = 1.22,
  # so the live gradients are scaled by 1 / 1.22 (it would be 1 / sqrt(2) with row 0).
  g = 0.5 / np.sqrt(6 * 0.25)
  np.testing.assert_allclose(updates['w'], -np.array([[0, 0], [0.5, 0.5], [1, 1]]) * g, rtol=1e-6)
  np.testing.assert_allclose(updates['b'], -np.array([1, 1]) * g, rtol=1e-6)
  assert np.all(np.asarray(optax.apply_updates(params, updates)['w'][0]) == 1.0)


# ---------------------------------------------------------------------------
# The report.

def test_report_counts_a_lora_matrix_like_the_handout():
  params = {'dense': {'kernel': jnp.zeros((768, 768))}}
  lora = lora_lib.init_factors(params, _peft(lora_rank=16, lora_targets='kernel$'),
                               jax.random.key(0))
  tree = {**params, 'lora': lora}
  labels = peft.param_labels(tree, _peft(method='lora'))
  report = peft.report(tree, labels)
  assert report['trainable'] == 24_576 and report['total'] == 589_824 + 24_576
  assert report['groups']['lora'] == {'total': 24_576, 'trainable': 24_576}
  assert round(100 * report['trainable'] / 589_824, 2) == 4.17
  assert 'parameters: 614,400 total, 24,576 trainable (4.00%)' in peft.format_report(report)


def test_report_counts_live_rows_of_scanned_leaves():
  tree = _tree(scanned=True)
  report = peft.report(tree, peft.param_labels(tree, _peft(freeze_layers=1)))
  layers = report['groups']['layers']
  # query 16 + wi 32 per layer, and relpos (layer 0); 2 of 3 layers live.
  assert layers == {'total': 3 * 48 + 16, 'trainable': 2 * 48}
  # The stacked attention norms and the final norm (BERT's embed_norm is an embedding).
  assert report['groups']['norms'] == {'total': 3 * 4 + 4, 'trainable': 2 * 4 + 4}
