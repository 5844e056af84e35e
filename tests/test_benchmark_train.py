"""The training benchmark and the speed changes behind it.

- the presets are the peers' (shapes, and the parameter counts HF's models report);
- the fused LM head (`losses.projected_cross_entropy`, the models' `lm_head_inputs`)
  gives the sums and gradients of the plain path (full logits, then the loss), for every
  family, with z-loss, label smoothing, several chunks and bfloat16 compute;
- train steps run with no implicit host transfer (`jax.transfer_guard('disallow')`);
- a benchmark record adds up, and `--compare_hf` pairs rounds into median ratios.
"""
import json
import os
import subprocess
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import speed as benchmark, train_step as benchmark_train
from ptlm_jax import errors, models, objectives
from ptlm_jax.data import vocab
from ptlm_jax.training import losses, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few-second model of each family (the presets' settings otherwise).
TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, head_dim=16, d_ff=64,
            vocab_size=384)


def tiny_config(family, seq_len=24, batch=4, **model):
  c = benchmark_train.preset_config(family, 'small', **{**TINY, **model})
  c.data.update(seq_len=seq_len, sp_vocab_size=c.model.vocab_size - 100)
  c.objective.update(max_predictions=5, targets_length=0)
  c.train.batch_size = batch
  return c


@pytest.mark.parametrize('family, params', [('bert', 5462784), ('gpt', 5387776), ('t5', 9443072)])
def test_presets_are_the_peers_shapes(family, params):
  # HF FlaxBertForMaskedLM / FlaxGPT2LMHeadModel / FlaxT5ForConditionalGeneration at the
  # harness's `small` preset report these counts (its JSON lines: params_total).
  c = benchmark_train.preset_config(family, 'small')
  assert models.param_count(c.model) == params
  m = c.model
  assert (m.vocab_size, m.d_model, m.num_layers, m.num_heads, m.d_ff, c.data.seq_len,
          c.train.batch_size) == (8192, 256, 4, 4, 1024, 128, 32)
  assert m.dtype == 'float32' and m.dropout_rate == 0 and m.attention_dropout_rate == 0
  big = benchmark_train.preset_config(family, 'base-ish')
  assert (big.model.d_model, big.model.num_layers, big.model.num_heads, big.model.d_ff,
          big.data.seq_len, big.train.batch_size) == (512, 6, 8, 2048, 256, 8)
  o = c.optim
  assert (o.optimizer, o.lr, o.weight_decay, o.grad_clip_norm, o.warmup_steps) == (
      'adamw', 1e-4, 0.01, 0.0, 0)
  if family == 't5':
    vocab_info = vocab.VocabInfo(c.data.sp_vocab_size)
    assert objectives.get_objective(c, vocab_info).targets_length == 32
    assert objectives.get_objective(big, vocab_info).targets_length == 64
  if family == 'bert':
    assert (c.objective.max_predictions, big.objective.max_predictions) == (20, 39)


def test_synthetic_rows_are_packed_documents():
  rows = benchmark_train.synthetic_rows(3, 200, piece_count=300, seed=1)
  for tokens, segments, positions in zip(rows['tokens'], rows['segment_ids'], rows['positions']):
    assert segments.min() == 1 and np.all(np.diff(segments) >= 0)  # no padding, ordered
    ends = np.flatnonzero(np.diff(np.append(segments, 0)))
    assert np.all(tokens[ends] == vocab.EOS_ID)  # each document ends in EOS
    starts = np.flatnonzero(np.diff(np.insert(segments, 0, 0)))
    assert np.all(positions[starts] == 0) and np.all(positions[starts[1:] - 1] > 0)
    inner = np.setdiff1d(np.arange(200), ends)
    assert tokens[inner].min() >= vocab.FIRST_ORDINARY_ID and tokens.max() < 300


def _plain_sums(h, table, bias, targets, weights, z_loss, smoothing):
  logits = jnp.einsum('btd,vd->btv', h, table.astype(h.dtype), preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias
  return losses.weighted_cross_entropy(logits, targets, weights, z_loss, smoothing)


@pytest.mark.parametrize('z_loss, smoothing, chunk, with_bias', [
    (0.0, 0.0, 1024, True), (1e-3, 0.1, 6, True), (1e-4, 0.0, 3, False), (0.0, 0.2, 9, False)])
def test_projected_cross_entropy_is_the_plain_loss(z_loss, smoothing, chunk, with_bias):
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(3, 12, 16)), jnp.float32)
  table = jnp.asarray(rng.normal(size=(40, 16)) * 0.5, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(40,)), jnp.float32) if with_bias else None
  targets = jnp.asarray(rng.integers(0, 40, (3, 12)), jnp.int32)
  weights = jnp.asarray(rng.random((3, 12)) < 0.7, jnp.float32)
  assert losses.chunk_positions(3, 12, chunk) == {1024: 12, 6: 2, 3: 1, 9: 3}[chunk]
  fused = losses.projected_cross_entropy(h, table, bias, targets, weights, z_loss, smoothing,
                                         chunk)
  plain = _plain_sums(h, table, bias, targets, weights, z_loss, smoothing)
  for k in plain:
    np.testing.assert_allclose(fused[k], plain[k], rtol=2e-6, atol=1e-5, err_msg=k)
  # The gradient is computed in the forward pass and scaled by the incoming cotangent.
  args = (h, table) + ((bias,) if with_bias else ())
  wrap = lambda f: (lambda *a: 2.5 * f(a[0], a[1], a[2] if with_bias else None, targets, weights,
                                             z_loss, smoothing)['loss'])
  got = jax.jit(jax.grad(wrap(lambda *a: losses.projected_cross_entropy(*a, chunk)),
                         argnums=tuple(range(len(args)))))(*args)
  want = jax.grad(wrap(_plain_sums), argnums=tuple(range(len(args))))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_ties_count_the_first_maximum_as_the_prediction():
  logits = jnp.array([[[1.0, 3.0, 3.0], [0.0, 0.0, 0.0]]])  # ties: argmax is the first
  targets, weights = jnp.array([[2, 0]]), jnp.ones((1, 2))
  assert float(losses.weighted_cross_entropy(logits, targets, weights)['correct']) == 1.0
  np.testing.assert_array_equal(losses.first_argmax(logits), jnp.argmax(logits, -1))
  eye = jnp.eye(3)  # h = logits rows against an identity table: the same logits
  fused = losses.projected_cross_entropy(logits, eye, None, targets, weights)
  assert float(fused['correct']) == 1.0


# T5's tied head (the d_model**-0.5 rescale) and GPT in bfloat16 stand for the plainer cases
# (GPT / T5 untied in float32), which the same code path computes.
@pytest.mark.parametrize('family, model', [('bert', {}), ('t5', {}),
                                           ('gpt', dict(dtype='bfloat16'))])
def test_fused_head_equals_the_models_logits(family, model):
  c = tiny_config(family, **model)
  vocab_info = vocab.VocabInfo(c.data.sp_vocab_size)
  objective = objectives.get_objective(c, vocab_info)
  net = models.build_model(c.model)
  rows = benchmark_train.synthetic_rows(4, objective.raw_length, vocab_info.piece_count)
  inputs, targets, weights = train.apply_objective(
      objective, jax.tree.map(jnp.asarray, rows), jax.random.PRNGKey(0), 0)
  params = nn.unbox(net.init(jax.random.PRNGKey(1), **jax.tree.map(lambda x: x[:1], inputs))
                    ['params'])
  results = {}
  for chunk in (0, 8):  # 0: the model's [B, T, V] logits, then weighted_cross_entropy
    sums_fn = train.model_loss(net, chunk)
    fn = lambda p, f=sums_fn: f(p, inputs, targets, weights, 1e-4, 0.1, deterministic=True)
    results[chunk] = jax.jit(jax.value_and_grad(lambda p, f=fn: f(p)['loss']))(params), fn(params)
  (loss0, grads0), sums0 = results[0]
  (loss8, grads8), sums8 = results[8]
  tol = dict(rtol=2e-2, atol=2e-2) if model.get('dtype') == 'bfloat16' else dict(rtol=1e-4,
                                                                                  atol=1e-5)
  for k in sums0:
    np.testing.assert_allclose(sums8[k], sums0[k], **tol, err_msg=k)
  scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads0))
  for path, g0 in jax.tree_util.tree_leaves_with_path(grads0):
    g8 = grads8
    for key in path:
      g8 = g8[key.key]
    np.testing.assert_allclose(g8, g0, rtol=tol['rtol'], atol=tol['atol'] * scale,
                               err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def t5_bench():
  return benchmark_train.TrainBench(tiny_config('t5', seq_len=32))


def test_train_steps_make_no_implicit_host_transfers(t5_bench):
  with jax.transfer_guard('disallow'):
    times = t5_bench.run(3)  # state, batch and key live on the device; metrics stay there
  assert len(times) == 3
  loss = t5_bench.last_loss()
  assert 0 < loss < 2 * np.log(384)


def test_record_adds_up(t5_bench):
  bench = t5_bench
  times = [0.5, 0.25, 1.0]
  r = benchmark_train.record(bench, times, 3.0, peak_flops=2e9, preset='tiny')
  assert r['step_ms'] == 500.0 and r['timed_steps'] == 3 and r['step_ms_min'] == 250.0
  b, s = bench.config.train.batch_size, bench.input_length
  assert (r['batch'], r['seq']) == (b, 32) and r['tokens_per_s'] == pytest.approx(b * s / 0.5)
  assert r['target_tokens_per_s'] == pytest.approx(b * bench.target_length / 0.5)
  flops = r['model_flops_per_step'] + r['head_flops_per_step']
  assert r['mfu'] == pytest.approx(flops / 0.5 / 2e9, abs=1e-4)
  assert r['mfu_excl_head'] == pytest.approx(r['model_flops_per_step'] / 0.5 / 2e9, abs=1e-4)
  assert r['peer'] == 'ptlm_jax' and r['kind'] == 'train' and r['config'] == 'tiny'
  assert r['params_total'] == models.param_count(bench.config.model)
  assert r['jax'] == jax.__version__ and r['device_kind']


def test_compare_hf_pairs_rounds_into_median_ratios(monkeypatch, capsys, tmp_path):
  step_ms = {'ptlm_jax': [100.0, 200.0], 'flax': [150.0, 240.0], 'torch': [300.0, 180.0],
             'torch-compile': [250.0, 500.0]}
  calls = []

  def fake_run(cmd):
    variant = ('ptlm_jax' if '-m' in cmd else 'flax' if cmd[1].endswith('hf_flax_train.py')
               else 'torch-compile' if '--compile' in cmd else 'torch')
    r = sum(1 for c in calls if c == variant)
    calls.append(variant)
    rec = dict(kind='train', peer=variant, family='gpt', config='small', batch=2, seq=10,
               step_ms_median=step_ms[variant][r], model_flops_per_step=1e9,
               head_flops_per_step=1e9)
    peak = dict(kind='peak', best_gflops={'float32': 100.0}) if variant == 'flax' else None
    return 'noise\n' + '\n'.join(json.dumps(x) for x in (peak, rec) if x) + '\n', ''

  monkeypatch.setattr(benchmark, '_run', fake_run)
  monkeypatch.setattr(benchmark, '_check_peers', lambda: None)
  # The flags compare_train reads, without parsing the process-wide FLAGS (other modules
  # of the suite define required flags of their own).
  monkeypatch.setattr(benchmark, 'FLAGS', types.SimpleNamespace(
      raw_dir=str(tmp_path), out='', peers=['flax', 'torch', 'torch-compile'],
      peer_python='peer-python', peer_script='/peers/hf_flax_train.py', dtype='float32',
      steps=None, warmup=None, peer_timeout=60, peak_size=0))
  benchmark.compare_train(2, ['gpt'], ['small'])
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  summary = lines[-1]
  assert summary['kind'] == 'train_comparison'
  # round 0: ours 100 ms vs flax 150 (1.5x), best torch 250 (2.5x); round 1: 1.2x, 0.9x
  assert summary['ratios_vs_hf_flax'] == [1.5, 1.2]
  assert summary['ratios_vs_best_hf_torch'] == [2.5, 0.9]
  assert summary['median_ratio_vs_hf_flax'] == 1.35
  assert summary['median_ratio_vs_best_hf_torch'] == 1.7
  assert summary['met'] is True
  ours = [x for x in lines if x.get('peer') == 'ptlm_jax']
  assert ours[0]['mfu'] == pytest.approx(2e9 / 0.1 / 100e9)  # the flax run's peak
  raw = sorted(os.listdir(tmp_path))
  assert raw == ['flax.jsonl', 'ptlm_jax.jsonl', 'torch-compile.jsonl', 'torch.jsonl']


def test_gpu_script_runs_without_clu_tensorflow_or_tfds(tmp_path):
  """benchmarks/gpu/gpu_bench.py --tiny with those modules made unimportable (the device
  image lacks them): the whole train path must import and run without them."""
  blocked = ('clu', 'tensorflow', 'tensorflow_datasets')
  code = ('import runpy, sys\n'
          f'for name in {blocked!r}:\n'
          '  sys.modules[name] = None  # import raises ImportError\n'
          'sys.argv = sys.argv[1:]\n'
          'runpy.run_path(sys.argv[0], run_name="__main__")\n')
  out = tmp_path / 'gpu.jsonl'
  proc = subprocess.run(
      [sys.executable, '-c', code, os.path.join(ROOT, 'benchmarks/gpu/gpu_bench.py'),
       '--model=gpt2-124m', '--tiny', '--steps=1', '--warmup=1', '--dtype=float32',
       f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  record = json.loads(out.read_text().splitlines()[-1])
  assert record['kind'] == 'gpu_train' and record['model'] == 'gpt2-124m' and record['tiny']
  assert record['attention'] == 'xla'  # a CPU has no cuDNN
  assert record['step_ms'] > 0 and record['tokens_per_s'] == pytest.approx(
      record['batch'] * record['seq'] / record['step_ms'] * 1e3, rel=1e-3)


def test_shape_overrides_reach_our_config_and_both_command_lines(monkeypatch, capsys):
  """--d_model --layers --heads --ffn --seq --tgt_len --batch --vocab: our preset_config
  takes them, and --compare_hf passes them to every process, the peers as --d-model etc."""
  shape = dict(vocab=1000, d_model=96, layers=3, heads=3, ffn=200, seq=40, tgt_len=12, batch=5)
  c = benchmark_train.preset_config('t5', 'base-ish', shape)
  m = c.model
  assert (m.vocab_size, m.d_model, m.num_layers, m.num_decoder_layers, m.num_heads, m.head_dim,
          m.d_ff, c.data.seq_len, c.objective.targets_length, c.train.batch_size) == (
              1000, 96, 3, 3, 3, 32, 200, 40, 12, 5)
  assert benchmark_train.preset_config('gpt', 'small', dict(seq=1024)).model.max_len == 1024
  with pytest.raises(errors.ConfigError):
    benchmark_train.preset_config('gpt', 'small', dict(d_model=100, heads=3))

  cmds = []

  def fake_run(cmd):
    cmds.append(cmd)
    rec = dict(kind='train', peer='x', family='t5', config='small', batch=5, seq=40,
               step_ms_median=10.0, model_flops_per_step=1e9, head_flops_per_step=1e9)
    return json.dumps(rec) + '\n', ''

  monkeypatch.setattr(benchmark, '_run', fake_run)
  monkeypatch.setattr(benchmark, '_check_peers', lambda: None)
  monkeypatch.setattr(benchmark, 'FLAGS', types.SimpleNamespace(
      raw_dir='', out='', peers=['flax', 'torch'], peer_python='peer-python',
      peer_script='/peers/hf_flax_train.py', dtype='float32', steps=2, warmup=None,
      peer_timeout=60, peak_size=0, **dict(shape, layers=['3'])))
  benchmark.compare_train(1, ['t5'], ['small'])
  ours, flax, torch = cmds
  assert ours[:3] == [sys.executable, '-m', 'benchmarks.speed']
  assert ours[-8:] == ['--vocab=1000', '--d_model=96', '--layers=3', '--heads=3', '--ffn=200',
                       '--seq=40', '--tgt_len=12', '--batch=5']
  peer_args = ['--vocab', '1000', '--d-model', '96', '--layers', '3', '--heads', '3', '--ffn',
               '200', '--seq', '40', '--tgt-len', '12', '--batch', '5']
  for peer in (flax, torch):
    assert peer[-16:] == peer_args and peer[peer.index('--config') + 1] == 'small'
    assert peer[peer.index('--steps') + 1] == '2'
    assert peer[peer.index('--dtype') + 1] == 'float32'
  summary = json.loads(capsys.readouterr().out.splitlines()[-1])
  assert summary['shape'] == shape
