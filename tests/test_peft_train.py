"""Partitions through the training loop: frozen leaves untouched and stateless, adapter-only
checkpoints that resume and reload onto their base, init from a workdir, continued pretraining.
"""
import json
import os

import flax.linen as nn
import numpy as np
import pytest

import data_testlib
import peft_testlib
import stand_ins
from ptlm_jax import errors, models
from ptlm_jax.peft import lora as lora_lib, partitions as peft
from ptlm_jax.training import checkpoint, pretrained, train

MESH = {'parallel.mode': 'mesh', 'parallel.num_devices': 4, 'parallel.mesh_data': 2,
        'parallel.mesh_fsdp': 2}


def _dir_bytes(path) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """A 2-step GPT pretraining workdir (2 layers) on synthetic rows."""
  workdir = str(tmp_path_factory.mktemp('base'))
  train.run(peft_testlib.family_config('gpt'), workdir, peft_testlib.components_fn())
  return workdir


def test_frozen_leaves_stay_bit_identical_and_have_no_optimizer_state(base, tmp_path):
  # Scanned layers from an unrolled source, layer 0 frozen inside the stacked leaves, mesh
  # mode with fsdp and two microbatches.
  config = peft_testlib.family_config('gpt', {
      **MESH, 'optim.microbatches': 2, 'init.source': base, 'train.checkpoint_every': 2,
      'peft.freeze_embeddings': True, 'peft.freeze_layers': 1, 'peft.rules': 'final_norm/=freeze'},
      scan_layers=True, d_model=64)  # d_model comes back from the source: 32
  train.run(config, str(tmp_path), peft_testlib.components_fn())
  state = peft_testlib.restore_state(str(tmp_path), 2)
  _, before, _ = pretrained.from_pretrained(base, scan_layers=True)
  before, after = peft_testlib.flat(before), peft_testlib.flat(state['params'])
  assert sorted(before) == sorted(after)
  for path, value in after.items():
    if path.startswith(('token_embed', 'position_embed', 'decoder/final_norm')):
      np.testing.assert_array_equal(value, before[path], err_msg=path)
    else:
      assert path.startswith('decoder/layers/'), path
      np.testing.assert_array_equal(value[0], before[path][0], err_msg=path)  # layer 0
      assert not np.array_equal(value[1], before[path][1]), path              # layer 1 trains
  opt_paths = list(peft_testlib.flat(state['opt_state']))
  frozen = ('token_embed', 'position_embed', 'final_norm')
  assert opt_paths and not [p for p in opt_paths if any(f in p for f in frozen)]
  report = json.load(open(tmp_path / 'params_report.json'))
  layer_size = sum(v[0].size for k, v in after.items() if k.startswith('decoder/layers/'))
  assert report['trainable'] == layer_size  # one of two layers
  assert report['init']['copied'] == len(after) and report['init']['fresh'] == []


def _lora_config(base, steps, **overrides):
  return peft_testlib.family_config('gpt', {
      'init.source': base, 'peft.method': 'lora', 'train.steps': steps,
      'train.checkpoint_every': 2, 'train.keep_checkpoints': 5, **overrides})


def test_lora_checkpoints_hold_the_adapters_resume_exactly_and_reload_onto_the_base(
    base, tmp_path, capsys):
  resumed, straight = str(tmp_path / 'resumed'), str(tmp_path / 'straight')
  train.run(_lora_config(base, 2), resumed, peft_testlib.components_fn())

  # The checkpoint: the LoRA factors and their Adam moments, a pointer to the base.
  state = peft_testlib.restore_state(resumed, 2)
  saved = peft_testlib.flat(state['params'])
  assert sorted(saved) == [f'lora/decoder/layers_{i}/attention/{m}/kernel/{f}'
                           for i in (0, 1) for m in ('query', 'value') for f in 'ab']
  assert all(p.split('/', 3)[3].startswith('lora/') for p in peft_testlib.flat(state['opt_state'])
             if '/mu/' in p or '/nu/' in p)
  assert checkpoint.peft_pointer(resumed) == {'source': base, 'source_step': 2}
  lora_params = 2 * 2 * (32 * 8 + 8 * 2 * 16)  # layers x (q, v) x (a + b)
  report = json.load(open(os.path.join(resumed, 'params_report.json')))
  assert report['trainable'] == report['checkpoint_params'] == lora_params == 2048
  state_bytes = lambda workdir: _dir_bytes(f'{workdir}/checkpoints/2/state')
  assert state_bytes(resumed) < 0.5 * state_bytes(base)

  # Reloaded for inference: base + factors, merged, give the LoRA model's outputs.
  model, merged, model_config = pretrained.from_pretrained(resumed)
  _, base_params, _ = pretrained.from_pretrained(base)
  lora_model = lora_lib.LoraModel(models.build_model(model_config), _lora_config(base, 2).peft)
  inputs = models.dummy_inputs(model_config, 2, 8)
  with_lora = {**base_params, 'lora': state['params']['lora']}
  expected = lora_model.apply({'params': with_lora}, **inputs)
  np.testing.assert_allclose(model.apply({'params': merged}, **inputs), expected, atol=1e-5)
  assert not np.allclose(model.apply({'params': base_params}, **inputs), expected, atol=1e-4)

  # Resuming rebuilds the base and continues exactly (here in mesh mode) as a straight run;
  # on another base it would not, so that is an error.
  with pytest.raises(errors.ConfigError, match=r'init.source=.*expected .*base of the adapter'):
    train.run(_lora_config(str(tmp_path), 4), resumed, peft_testlib.components_fn())
  capsys.readouterr()
  train.run(_lora_config(base, 4, **MESH), resumed, peft_testlib.components_fn())
  assert f'resumed from step 2 ({resumed}/checkpoints/2)' in capsys.readouterr().out
  train.run(_lora_config(base, 4), straight, peft_testlib.components_fn())
  got, want = stand_ins.read_metrics(resumed), stand_ins.read_metrics(straight)
  assert [got[s]['loss'] for s in (1, 2)] == [want[s]['loss'] for s in (1, 2)]
  np.testing.assert_allclose([got[s]['loss'] for s in (3, 4)], [want[s]['loss'] for s in (3, 4)],
                             rtol=1e-5)


def test_init_copies_a_backbone_and_initialises_a_new_head(base):
  source = pretrained.load_source(peft_testlib.family_config('gpt', {'init.source': base}))
  m = peft_testlib.family_config('gpt').model
  m.head, m.num_classes = 'sequence_classification', 3
  abstract = peft.flatten(nn.unbox(models.abstract_params(m)))
  match = pretrained.match_params(peft.unflatten(abstract), source)
  assert sorted(match.fresh) == ['head/bias', 'head/kernel'] and not match.unused
  source_flat = peft.flatten(source.params)
  assert sorted(match.copied) == sorted(f'backbone/{p}' for p in source_flat)
  for path, value in source_flat.items():
    np.testing.assert_array_equal(match.copied[f'backbone/{path}'], value)

  # A head of another size is replaced; any other shape difference is a named error.
  classifier = pretrained.Source('clf', None, m, peft.unflatten({
      **{f'backbone/{p}': v for p, v in source_flat.items()},
      'head/kernel': np.zeros((32, 2)), 'head/bias': np.zeros((2,))}))
  match = pretrained.match_params(peft.unflatten(abstract), classifier)
  assert sorted(match.replaced) == ['head/bias', 'head/kernel'] and not match.fresh
  source_flat['token_embed/embedding'] = np.zeros((8, 32))
  with pytest.raises(errors.UserError, match=r'backbone/token_embed/embedding has shape '
                                                 r'\(8, 32\) there and \(256, 32\) here'):
    pretrained.match_params(peft.unflatten(abstract), pretrained.Source(
        'bad', None, m, peft.unflatten(source_flat)))


def test_freezing_everything_is_a_named_error(tmp_path):
  config = stand_ins.tiny_config({'peft.rules': '.=freeze'})
  with pytest.raises(errors.ConfigError, match=r"peft.rules='.=freeze'.*every one is frozen"):
    train.run(config, str(tmp_path), stand_ins.components_fn())


def test_missing_source_is_a_named_error(tmp_path):
  config = peft_testlib.family_config('gpt', {'init.source': str(tmp_path / 'nowhere')})
  with pytest.raises(errors.UserError, match='config.init.source=.*nowhere'):
    train.run(config, str(tmp_path / 'run'), peft_testlib.components_fn())


def _real_config(corpus, **overrides):
  c = data_testlib.small_config(corpus)
  c.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, d_ff=64, dropout_rate=0.0,
                 attention_dropout_rate=0.0)
  c.data.seq_len = 32
  c.train.update(batch_size=8, steps=2, log_every=1, eval_every=2, eval_steps=1,
                 checkpoint_every=2)
  c.parallel.num_devices = 1
  for key, value in overrides.items():
    group, name = key.split('.')
    c[group][name] = value
  return c


def test_continued_pretraining_keeps_the_tokenizer_then_fine_tunes(tmp_path):
  data_testlib.small_tokenizer('news')
  news, shakespeare, lora = (str(tmp_path / n) for n in ('news', 'shakespeare', 'lora'))
  train.run(_real_config('news'), news, train.build_components)
  # Continue on Shakespeare: no tokenizer given, the news run's comes along.
  last = train.run(_real_config('shakespeare', **{'init.source': news}), shakespeare,
                   train.build_components)
  resolved = checkpoint.run_config(shakespeare)
  assert os.path.basename(resolved.data.tokenizer_path).startswith('news-unigram800-')
  assert np.isfinite(last['eval_loss'])
  _, before, _ = pretrained.from_pretrained(news)
  _, after, _ = pretrained.from_pretrained(shakespeare)
  assert not np.array_equal(before['token_embed']['embedding'], after['token_embed']['embedding'])
  # Then fine-tune that with LoRA (still on its tokenizer).
  last = train.run(_real_config('shakespeare', **{'init.source': shakespeare,
                                                  'peft.method': 'lora'}), lora,
                   train.build_components)
  assert np.isfinite(last['eval_loss'])
  assert checkpoint.run_config(lora).data.tokenizer_path == resolved.data.tokenizer_path
  assert checkpoint.peft_pointer(lora)['source'] == shakespeare
