"""Fine-tuning from HF checkpoint dirs with their own tokenizers (BERT, GPT-2, T5).

The dirs are tiny random HF models saved with real tokenizer files (tests/hf_testlib.py);
the references are transformers' tokenizers and transformers' BertForSequenceClassification
(PyTorch), never this project's code.
"""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

transformers = pytest.importorskip('transformers')
torch = pytest.importorskip('torch')

from ptlm_jax import config_lib, errors, objectives  # pylint: disable=g-import-not-at-top
from ptlm_jax.data import tokenizer as tokenizer_lib
from ptlm_jax.finetune import data as tasks, qa as task_qa, run as finetune
from ptlm_jax.training import pretrained

import hf_testlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def hf_dirs(tmp_path_factory):
  return hf_testlib.build(tmp_path_factory.mktemp('hf'))


def _task_config(family, name, length, **task):
  c = config_lib.base_config(family, 'tiny')
  c.data.seq_len = length
  c.task.name = name
  c.task.update(task)
  return c


SENTENCES = ['Romeo loves Juliet in Verona.', 'Héllo wörld: naïve café, 3.14 résumé!',
             'The ending was superb and truly moving.', 'unbelievable']


@pytest.mark.parametrize('family', ['bert', 'gpt2', 't5'])
def test_tokenisation_equals_transformers(hf_dirs, family):
  hf = transformers.AutoTokenizer.from_pretrained(hf_dirs[family])
  ours = tokenizer_lib.load(hf_dirs[family])
  info = ours.vocab_info
  for text in SENTENCES:
    assert ours.encode(text) == hf(text, add_special_tokens=False)['input_ids'], text
    assert ours.decode(ours.encode(text)) == hf.decode(hf(text)['input_ids'],
                                                      skip_special_tokens=True)
  # Special ids are the checkpoint's, not this project's 0..6.
  assert (info.pad_id, info.eos_id) == (hf.pad_token_id if family != 'gpt2' else hf.eos_token_id,
                                        hf.sep_token_id if family == 'bert' else hf.eos_token_id)
  a, b = SENTENCES[2], SENTENCES[0]
  if family == 'bert':
    assert (info.cls_id, info.sep_id, info.mask_id) == (12, 13, 14) == (
        hf.cls_token_id, hf.sep_token_id, hf.mask_token_id)
    c = _task_config('bert', 'classification', 32, input_fields='a,b', target_field='label')
    f = tasks.encode_classification(c, ours, [{'a': a, 'b': b, 'label': 0}]).features
    want = hf(a, b)
    n = len(want['input_ids'])
    assert f['tokens'][0, :n].tolist() == want['input_ids'] and not f['tokens'][0, n:].any()
    assert f['token_types'][0, :n].tolist() == want['token_type_ids']
  if family == 't5':
    assert info.sentinel(0) == hf.convert_tokens_to_ids('<extra_id_0>')
    assert info.sentinel(99) == hf.convert_tokens_to_ids('<extra_id_99>')
    c = _task_config('t5', 'classification', 32, input_fields='text', target_field='label',
                     prompt='classify: ', label_words='negative,positive', format='text',
                     target_length=16)
    f = tasks.encode_text(c, ours, [{'text': a, 'label': 1}]).features
    want = hf('classify: ' + a)['input_ids']
    assert f['tokens'][0, :len(want)].tolist() == want  # encoder input, </s> ended
    target = hf('positive')['input_ids']
    assert f['targets'][0, :len(target)].tolist() == target


@pytest.mark.parametrize('family', ['bert', 'gpt2'])
def test_ner_word_pieces_and_labels_equal_transformers_word_ids(hf_dirs, family):
  """First sub-word labels, as transformers' is_split_into_words (GPT-2: add_prefix_space)."""
  hf = transformers.AutoTokenizer.from_pretrained(hf_dirs[family], add_prefix_space=True)
  ours = tokenizer_lib.load(hf_dirs[family])
  words = ['Romeo', 'loves', 'Juliet', 'unbelievable', 'résumé', 'in', 'Verona', '.']
  want = hf(words, is_split_into_words=True)
  family_name = 'bert' if family == 'bert' else 'gpt'
  c = _task_config(family_name, 'ner', 64, target_field='tags')
  data = tasks.encode_ner(c, ours, [{'tokens': words, 'tags': list(range(len(words)))}])
  f = data.features
  ids = want['input_ids'] + ([] if family == 'bert' else [ours.vocab_info.eos_id])
  assert f['tokens'][0, :len(ids)].tolist() == ids
  first = [i for i, w in enumerate(want.word_ids()) if w is not None and
           (i == 0 or want.word_ids()[i - 1] != w)]
  assert np.nonzero(f['tag_mask'][0])[0].tolist() == first
  assert f['tags'][0, first].tolist() == list(range(len(words)))


def test_qa_windows_use_the_checkpoint_specials(hf_dirs):
  ours = tokenizer_lib.load(hf_dirs['bert'])
  c = _task_config('bert', 'qa', 24, max_query_length=8, doc_stride=4)
  context = 'The story was superb and the ending was truly moving in every scene.'
  example = {'question': 'What was superb?', 'context': context,
             'answers': {'text': ['story'], 'answer_start': [context.index('story')]}}
  data = task_qa.encode_qa(c, ours, [example])
  f = data.features
  info = ours.vocab_info
  assert (f['tokens'][:, 0] == info.cls_id).all()
  s, e = f['spans'][0]
  assert ours.decode(f['tokens'][0, s:e + 1]) == 'story'
  q = ours.encode('What was superb?')
  assert f['tokens'][0, 1:len(q) + 2].tolist() == q + [info.sep_id]


def test_mlm_masks_with_the_checkpoint_mask_and_draws_its_ordinary_ids(hf_dirs):
  tok = tokenizer_lib.load(hf_dirs['bert'])
  info = tok.vocab_info
  c = config_lib.base_config('bert', 'tiny')
  c.model.vocab_size = info.size
  c.data.seq_len = 64
  c.objective.update(predict_positions='off', mask_count_mode='bernoulli', mask_rate=0.5)
  objective = objectives.get_objective(c, info)
  rows = []
  for text in hf_testlib.SENTENCES[:256]:
    ids = [info.cls_id] + tok.encode(text)[:62] + [info.sep_id]
    rows.append(ids + [info.pad_id] * (64 - len(ids)))
  tokens = np.array(rows, np.int32)
  segments = (np.arange(64)[None] < (tokens != info.pad_id).sum(1, keepdims=True)).astype(np.int32)
  batch = dict(tokens=tokens, segment_ids=segments,
               positions=np.broadcast_to(np.arange(64, dtype=np.int32), tokens.shape))
  inputs, targets, weights = jax.jit(objective)(batch, jax.random.key(0))
  inputs, weights = np.asarray(inputs['tokens']), np.asarray(weights) > 0
  specials = set(info.specials().values())
  assert not any(t in specials for t in tokens[weights])  # [CLS], [SEP], [PAD] never chosen
  changed = inputs[weights]
  n = weights.sum()
  assert n > 800
  masked = (changed == 14).mean()  # the checkpoint's [MASK], not this project's 6
  assert 0.74 < masked < 0.86 and not (inputs == 6).any()
  replaced = changed[(changed != 14) & (changed != tokens[weights])]
  assert 0.05 < len(replaced) / n < 0.15
  ordinary = set(info.ordinary_ids.tolist())
  assert set(replaced.tolist()) <= ordinary and not ordinary & specials
  assert tok.encode('good')[0] in ordinary
  assert (inputs[~weights] == tokens[~weights]).all()


def test_missing_or_mismatched_tokenizer_is_one_error_naming_both(hf_dirs, tmp_path):
  bare = tmp_path / 'bert-no-tokenizer'
  shutil.copytree(hf_dirs['bert'], bare)
  for name in os.listdir(bare):
    if name not in ('config.json', 'model.safetensors'):
      os.remove(bare / name)
  config = config_lib.base_config('bert', 'tiny')
  config.init.source = str(bare)
  source = pretrained.load_source(config)
  with pytest.raises(errors.UserError, match=f'init.source={bare} holds no tokenizer'):
    pretrained.inherit_fields(config, source)
  # GPT-2's tokenizer (or this project's) given for the BERT checkpoint: named, with both.
  config.data.tokenizer_path = hf_dirs['gpt2']
  with pytest.raises(errors.UserError, match=r'gpt2/tokenizer.json .*init.source=.*do not fit'):
    pretrained.inherit_fields(config, source)
  # The checkpoint's own tokenizer, given as vocab.txt: fine, and the same ids.
  config.data.tokenizer_path = os.path.join(hf_dirs['bert'], 'vocab.txt')
  notes = pretrained.inherit_fields(config, source)
  assert config.model.vocab_size == 265 and not any('tokenizer' in n for n in notes)
  by_vocab = tokenizer_lib.load(config.data.tokenizer_path)
  by_json = tokenizer_lib.load(hf_dirs['bert'])
  assert [by_vocab.encode(s) for s in SENTENCES] == [by_json.encode(s) for s in SENTENCES]


def test_a_run_without_init_source_says_it_trains_random_weights():
  config = config_lib.base_config('bert', 'tiny')
  config.optim.lr = 2e-5
  note = finetune.random_weights_note(config)
  assert 'randomly initialised weights' in note and 'lr 2e-05' in note
  config.init.source = 'runs/bert'
  assert finetune.random_weights_note(config) is None


# ---------------------------------------------------------------------------
# Through the command line.

def _reviews_csv(tmp_path):
  import csv  # pylint: disable=g-import-not-at-top
  paths = {}
  for split, n, seed in (('train', 192, 2), ('dev', 48, 3)):
    paths[split] = tmp_path / f'{split}.csv'
    with open(paths[split], 'w', newline='', encoding='utf-8') as f:
      writer = csv.writer(f)
      writer.writerow(['text', 'label'])
      writer.writerows(hf_testlib.reviews(n, seed))
  return paths


def _cli(module, *flags, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, PTLM_DATA_DIR=str(tmp_path / 'cache'),
             JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *flags], cwd=ROOT, env=env, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)


def _fine_tune(family, config_arg, hf_dir, tmp_path, *extra):
  files = _reviews_csv(tmp_path)
  workdir = tmp_path / f'ft-{family}'
  proc = _cli('ptlm_jax.main', f'--config=configs/finetune/text_classification.py:{config_arg}',
              f'--workdir={workdir}', f'--config.init.source={hf_dir}',
              f"--config.task.train_file={files['train']}",
              f"--config.task.validation_file={files['dev']}",
              '--config.task.label_names=negative,positive', '--config.data.seq_len=32',
              '--config.train.batch_size=16', '--config.optim.lr=2e-3',
              '--config.train.steps=150', '--config.train.eval_every=150',
              '--config.parallel.num_devices=1', *extra, tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'data.tokenizer_path={hf_dir}/tokenizer.json from init.source' in proc.stdout
  assert 'randomly initialised' not in proc.stdout
  metrics = [json.loads(l) for l in open(workdir / 'metrics.jsonl', encoding='utf-8')]
  losses = [m['train/loss'] for m in metrics if 'train/loss' in m]
  evals = [m for m in metrics if 'eval/task_accuracy' in m]
  return workdir, losses, evals[-1]


def test_cli_fine_tunes_an_hf_bert_and_transformers_reads_the_export(hf_dirs, tmp_path):
  workdir, losses, last = _fine_tune('bert', 'bert', hf_dirs['bert'], tmp_path)
  # A random tiny model learns the keyword task (balanced: 0.5 by chance; 1.0 when tuned).
  assert losses[-1] < 0.5 * losses[0] and last['eval/task_accuracy'] > 0.75
  out = tmp_path / 'exported'
  proc = _cli('ptlm_jax.main.hf', f'--input={workdir}', f'--output={out}', '--format=hf',
              tmp_path=tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)  # the tokenizer came along
  hf_model = transformers.BertForSequenceClassification.from_pretrained(out).eval()
  texts = [t for t, _ in hf_testlib.reviews(6, seed=9)]
  batch = hf_tok(texts, padding=True, return_tensors='pt')
  with torch.no_grad():
    want = hf_model(**batch).logits.numpy()
  model, params, _ = pretrained.from_pretrained(str(workdir))
  ids = batch['input_ids'].numpy().astype(np.int32)
  mask = batch['attention_mask'].numpy().astype(np.int32)
  got = model.apply({'params': params}, tokens=ids, segment_ids=mask,
                    positions=np.cumsum(mask, 1).astype(np.int32) - 1, deterministic=True)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


def test_cli_fine_tunes_an_hf_gpt2_classifier(hf_dirs, tmp_path):
  _, losses, last = _fine_tune('gpt2', 'gpt', hf_dirs['gpt2'], tmp_path)
  assert losses[-1] < 0.8 * losses[0] and last['eval/task_accuracy'] > 0.7


def test_cli_fine_tunes_an_hf_t5_text_to_text(hf_dirs, tmp_path):
  # T5 learns the label words' pieces; its rank classification needs more than 150 steps.
  _, losses, last = _fine_tune('t5', 't5', hf_dirs['t5'], tmp_path)
  assert losses[-1] < 0.3 * losses[0] and 0.0 <= last['eval/task_accuracy'] <= 1.0
