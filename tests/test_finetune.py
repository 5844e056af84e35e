"""Task objectives and losses by hand, tiny classifiers that overfit, and task runs through
the one training loop that report their task metric.

Legend: B rows, L length, C classes, G generated tokens.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ptlm_jax import config_lib, errors, models
from ptlm_jax.finetune import data as tasks, evaluate as task_eval, metrics as task_metrics
from ptlm_jax.finetune import objectives as task_objectives, run as finetune
from ptlm_jax.finetune import tasks as task_configs
from ptlm_jax.training import checkpoint, train

import data_testlib
import stand_ins


def _tiny_model(family, **model):
  c = config_lib.base_config(family, 'tiny')
  c.model.update(vocab_size=128, d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2,
                 head_dim=16, d_ff=64, dropout_rate=0.0, attention_dropout_rate=0.0, **model)
  return c.model


def test_head_objective_rows_and_missing_fields():
  batch = {'tokens': jnp.array([[4, 9, 5], [0, 0, 0]]),
           'segment_ids': jnp.array([[1, 1, 1], [0, 0, 0]]),
           'positions': jnp.array([[0, 1, 2], [0, 0, 0]]), 'label': jnp.array([[1], [0]]),
           'spans': jnp.array([[1, 2], [0, 0]])}
  inputs, targets, weights = task_objectives.Head('classification', 3)(batch, None)
  assert targets.tolist() == [[1], [0]] and weights.tolist() == [[1.0], [0.0]]  # pad row: 0
  assert inputs['token_types'].tolist() == [[0, 0, 0], [0, 0, 0]]  # absent -> zeros
  _, targets, weights = task_objectives.Head('qa', 3)(batch, None)
  assert targets.tolist() == [[1, 2], [0, 0]] and weights.tolist() == [[1, 1], [0, 0]]
  # The loop initialises from tokens / segment_ids / positions only: zeros, right shapes.
  bare = {k: batch[k] for k in ('tokens', 'segment_ids', 'positions')}
  _, targets, weights = task_objectives.Head('ner', 3)(bare, None)
  assert targets.shape == weights.shape == (2, 3) and not weights.any()


def test_text_to_text_and_continuation_objectives():
  batch = {'tokens': jnp.array([[21, 22, 1, 0]]), 'segment_ids': jnp.array([[1, 1, 1, 0]]),
           'positions': jnp.array([[0, 1, 2, 0]]), 'targets': jnp.array([[31, 32, 1, 0]]),
           'target_segment_ids': jnp.array([[1, 1, 1, 0]]),
           'loss_mask': jnp.array([[0, 1, 0, 0]])}
  inputs, targets, weights = task_objectives.TextToText(4, 4)(batch, None)
  assert inputs['decoder_tokens'].tolist() == [[0, 31, 32, 0]]  # shifted right behind 0
  assert inputs['decoder_positions'].tolist() == [[0, 1, 2, 0]]
  assert inputs['encoder_tokens'].tolist() == [[21, 22, 1, 0]]
  assert targets.tolist() == [[31, 32, 1, 0]] and weights.tolist() == [[1, 1, 1, 0]]
  inputs, targets, weights = task_objectives.Continuation(4)(batch, None)
  assert targets.tolist() == [[22, 1, 0, 0]] and weights.tolist() == [[0, 1, 0, 0]]


def test_span_loss_is_the_mean_of_start_and_end_cross_entropy():
  rng = np.random.default_rng(0)
  start, end = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
  spans, weights = np.array([[1, 3], [0, 0], [2, 2]]), np.array([[1, 1], [1, 1], [0, 0]])
  log_softmax = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))
  expected = -np.mean([log_softmax(start[i])[spans[i, 0]] + log_softmax(end[i])[spans[i, 1]]
                       for i in (0, 1)]) / 2
  sums = task_objectives.span_loss((jnp.asarray(start), jnp.asarray(end)), spans, weights)
  assert float(sums['loss'] / sums['weight']) == pytest.approx(expected, rel=1e-5)
  logits = rng.normal(size=(3, 4))
  sums = task_objectives.classification_loss(jnp.asarray(logits), np.array([[2], [0], [1]]),
                                             np.ones((3, 1)))
  assert float(sums['loss']) == pytest.approx(-sum(log_softmax(logits[i])[k] for i, k in
                                                   enumerate((2, 0, 1))), rel=1e-5)


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_tiny_classifier_overfits_a_small_batch(family):
  model_config = _tiny_model(family, head='sequence_classification', num_classes=3)
  model = models.build_model(model_config)
  rng = np.random.default_rng(1)
  lengths = rng.integers(5, 12, size=12)
  segment_ids = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
  batch = {'tokens': rng.integers(7, 128, size=(12, 12)) * segment_ids,
           'segment_ids': segment_ids, 'positions': np.arange(12)[None] * segment_ids,
           'label': rng.integers(0, 3, size=(12, 1))}
  objective = task_objectives.Head('classification', 12)
  inputs, targets, weights = objective(batch, None)
  params = nn.unbox(model.init(jax.random.key(0), **inputs)['params'])
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits = model.apply({'params': p}, **inputs)
      sums = task_objectives.classification_loss(logits, targets, weights)
      return sums['loss'] / sums['weight']
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  for _ in range(150):
    params, opt_state = step(params, opt_state)
  predictions = model.apply({'params': params}, **inputs).argmax(-1)
  assert predictions.tolist() == batch['label'][:, 0].tolist()


# ---------------------------------------------------------------------------
# Task runs through train.run.

def _task_config(config_file: str, arg: str, **overrides):
  namespace = {}
  with open(f'configs/finetune/{config_file}.py', encoding='utf-8') as f:
    exec(compile(f.read(), config_file, 'exec'), namespace)  # pylint: disable=exec-used
  c = namespace['get_config'](arg)
  c.data.corpus = 'shakespeare'
  c.data.sp_vocab_size = data_testlib.TEST_VOCAB
  c.data.sp_train_chars = data_testlib.TEST_TRAIN_CHARS
  c.data.train_split = 'train[:64]'
  c.model.vocab_size = config_lib.padded_vocab_size(data_testlib.TEST_VOCAB)
  c.model.update(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, head_dim=16,
                 d_ff=64, dropout_rate=0.0, attention_dropout_rate=0.0)
  c.train.update(batch_size=16, steps=2, log_every=1, eval_every=2, eval_steps=2,
                 checkpoint_every=2)
  c.optim.update(lr=1e-3, warmup_steps=1)
  c.task.eval_examples = 32
  c.parallel.num_devices = 1  # one device compiles faster; the loop's own tests cover pmap
  for key, value in overrides.items():
    group, name = key.split('.')
    c[group][name] = value
  return c


def test_classification_run_reports_accuracy_and_f1(tmp_path):
  data_testlib.small_tokenizer()
  config = _task_config('rotten_tomatoes', 'bert', **{'data.seq_len': 32})
  last = train.run(config, str(tmp_path), finetune.build_components)
  # 32 examples = the loop's 2 eval batches of 16: its accuracy is the task accuracy.
  assert last['eval_task_accuracy'] == pytest.approx(last['eval_accuracy'])
  assert 0.0 <= last['eval_task_f1'] <= 1.0
  written = stand_ins.read_metrics(str(tmp_path), 'eval/')[2]
  assert written['task_f1'] == pytest.approx(last['eval_task_f1'])
  # Each evaluation's per-example predictions (T5X's inference_eval layout): their accuracy
  # is the reported one, and the labels are the validation split's, in order.
  records = checkpoint.read_eval_records(str(tmp_path), 'validation', 2)
  labels = [ex['label'] for ex in tasks.read_examples(config, 'validation', limit=32)]
  assert [r['label'] for r in records] == labels
  assert np.mean([r['prediction'] == r['label'] for r in records]) == pytest.approx(
      last['eval_task_accuracy'])


@pytest.mark.parametrize('config_file, arg, metric', [
    ('shakespeare_ner', 'gpt', 'task_entity_f1'),
    ('shakespeare_qa', 't5', 'task_exact_match'),
    ('rotten_tomatoes', 't5', 'task_accuracy'),  # text-to-text, rank classification
])
def test_task_runs_report_their_metric(config_file, arg, metric, tmp_path):
  data_testlib.small_tokenizer()
  # Training batches cut to 3 widths (data.length_buckets): every row layout takes them.
  config = _task_config(config_file, arg, **{'data.seq_len': 48, 'task.doc_stride': 16,
                                              'task.max_query_length': 16,
                                              'data.length_buckets': 3})
  last = train.run(config, str(tmp_path), finetune.build_components)
  assert np.isfinite(last['eval_loss']) and np.isfinite(last['train_loss'])
  assert 0.0 <= last[f'eval_{metric}'] <= (100.0 if config_file.endswith('qa') else 1.0)
  records = checkpoint.read_eval_records(str(tmp_path), 'validation', config.train.steps)
  assert len(records) == len(tasks.read_examples(config, 'validation', limit=32))
  if config_file == 'shakespeare_ner':  # tags per word, entity F1 recomputed from them
    assert task_metrics.entity_f1([r['label'] for r in records],
                                  [r['prediction'] for r in records])['entity_f1'] == (
                                      pytest.approx(last['eval_task_entity_f1']))


def greedy_stand_in(model, params, prompt_BxL, lengths_B, max_new_tokens, eos_id=1, pad_id=0):
  """Uncached greedy decoding (GPT): the whole row again for each new token (rows run to
  max_new_tokens; the caller cuts each at the tokenizer's EOS)."""
  del eos_id, pad_id
  batch, length = prompt_BxL.shape
  tokens = np.concatenate([prompt_BxL, np.zeros((batch, max_new_tokens), np.int32)], axis=1)
  lengths, rows = np.array(lengths_B), np.arange(batch)
  apply = jax.jit(functools.partial(model.apply, deterministic=True))
  new_BxG = np.zeros((batch, max_new_tokens), np.int32)
  for g in range(max_new_tokens):
    segment_ids = (np.arange(length + max_new_tokens)[None] < lengths[:, None]).astype(np.int32)
    logits = apply({'params': params}, tokens=tokens, segment_ids=segment_ids,
                   positions=np.arange(length + max_new_tokens)[None] * segment_ids)
    new_BxG[:, g] = np.asarray(logits)[rows, lengths - 1].argmax(-1)
    tokens[rows, lengths] = new_BxG[:, g]
    lengths = lengths + 1
  return new_BxG


def test_summarization_run_reports_rouge(tmp_path, monkeypatch):
  pytest.importorskip('rouge_score')
  data_testlib.small_tokenizer()
  monkeypatch.setattr(task_eval, 'library_generate', greedy_stand_in)
  config = _task_config('news_headlines', 'gpt', **{'data.seq_len': 48,
                                                    'task.target_length': 8})
  last = train.run(config, str(tmp_path), finetune.build_components)
  assert {'eval_task_rouge1', 'eval_task_rouge2', 'eval_task_rougeL'} <= set(last)
  assert 0.0 <= last['eval_task_rouge2'] <= last['eval_task_rouge1'] <= 100.0


def test_config_files_and_task_validation():
  for arg in ('bert', 'gpt', 't5', 't5,head', 'gpt,text,quick'):
    c = task_configs.finish(task_configs.start(arg, 'classification'), arg, train_examples=640)
    c.task.update(dataset='x', label_words='no,yes')
    config_lib.validate(c)
  assert c.train.steps == 150 and c.task.format == 'text' and c.model.head == 'lm'
  c = task_configs.finish(task_configs.start('bert', 'ner'), 'bert', train_examples=640)
  assert (c.train.steps, c.optim.lr, c.optim.warmup_steps) == (60, 2e-5, 6)
  with pytest.raises(errors.ConfigError, match='task.dataset'):
    config_lib.validate(c)
  c.task.dataset = 'conll2003'
  c.model.head = 'sequence_classification'
  with pytest.raises(errors.ConfigError, match="model.head='sequence_classification'"):
    config_lib.validate(c)
  c = task_configs.finish(task_configs.start('bert', 'summarization'), 'bert', train_examples=64)
  c.task.dataset = 'news_headlines'
  with pytest.raises(errors.ConfigError, match="task.format='text'.*BERT"):
    config_lib.validate(c)
  with pytest.raises(errors.ConfigError, match='config argument'):
    task_configs.start('bert,text', 'ner')
