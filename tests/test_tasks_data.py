"""Task features on hand-built examples: layouts, first sub-word labels, QA windows and
span decoding, text rows, the batch iterator, and the offline NER / QA sets."""
import ml_collections
import numpy as np
import pytest

from ptlm_jax import config_lib, errors
from ptlm_jax.data import vocab
from ptlm_jax.finetune import corpora as task_corpora, data as tasks, qa as task_qa

CLS, SEP, EOS = vocab.CLS_ID, vocab.SEP_ID, vocab.EOS_ID


class FakeTokenizer:
  """Each word -> one piece per 3 characters, ids handed out in order of first use."""

  vocab_info = vocab.VocabInfo(1000)  # the project's special ids

  def __init__(self):
    self.ids = {}

  def _piece(self, piece):
    return self.ids.setdefault(piece, 10 + len(self.ids))

  def encode(self, text):
    return [self._piece(w[i:i + 3]) for w in text.split() for i in range(0, len(w), 3)]

  def encode_batch(self, texts):
    return [self.encode(t) for t in texts]

  encode_words = encode_batch


def _config(family, name, length, **task):
  c = config_lib.base_config(family, 'tiny')
  c.data.seq_len = length
  c.task.name = name
  c.task.update(task)
  return c


@pytest.mark.parametrize('family, start', [('bert', 1), ('gpt', 0), ('t5', 0)])
def test_ner_labels_sit_on_the_first_sub_word(family, start):
  tok = FakeTokenizer()
  rom, eo, lov, es, jul, iet = tok.encode('Rom eo lov es Jul iet')
  example = {'tokens': ['Romeo', 'loves', 'Juliet'], 'ner': [1, 0, 1]}
  c = _config(family, 'ner', 10, target_field='ner')
  data = tasks.encode_ner(c, tok, [example])
  f = data.features
  body = [rom, eo, lov, es, jul, iet]
  row = ([CLS] + body + [SEP]) if family == 'bert' else body + [EOS]
  assert f['tokens'][0].tolist() == row + [0] * (10 - len(row))
  first = [start, start + 2, start + 4]
  assert np.nonzero(f['tag_mask'][0])[0].tolist() == first
  assert f['tags'][0, first].tolist() == [1, 0, 1]
  assert f['tags'][0].sum() == 2  # no label anywhere else
  assert data.host['word_index'][0, first].tolist() == [0, 1, 2]
  assert f['segment_ids'][0].tolist() == [1] * len(row) + [0] * (10 - len(row))


def test_ner_words_that_do_not_fit_are_dropped_whole():
  tok = FakeTokenizer()
  example = {'tokens': ['Romeo', 'loves', 'Juliet'], 'ner': [1, 0, 1]}
  data = tasks.encode_ner(_config('bert', 'ner', 6, target_field='ner'), tok, [example])
  # [CLS] Rom eo lov es [SEP]: 'Juliet' (2 pieces) no longer fits.
  assert data.features['tokens'][0].tolist() == [CLS] + tok.encode('Rom eo lov es') + [SEP]
  assert np.nonzero(data.features['tag_mask'][0])[0].tolist() == [1, 3]


def test_pair_layouts_and_longest_first_truncation():
  assert tasks.layout('bert', [11, 12], [21], 8) == (
      [CLS, 11, 12, SEP, 21, SEP], [0, 0, 0, 0, 1, 1])
  assert tasks.layout('gpt', [11, 12], [21], 8) == (
      [11, 12, SEP, 21, EOS], [0, 0, 0, 1, 1])
  # Budget 7 - 3 specials = 4: the longer input loses pieces first.
  tokens, _ = tasks.layout('bert', [11, 12, 13, 14, 15], [21, 22], 7)
  assert tokens == [CLS, 11, 12, SEP, 21, 22, SEP]


def _qa_example():
  return {'question': 'q', 'context': 'a b c d e f g h',
          'answers': {'text': ['d e'], 'answer_start': [6]}}


def test_qa_windows_follow_the_document_stride():
  tok = FakeTokenizer()
  c = _config('bert', 'qa', 8, doc_stride=2, max_query_length=4)
  data = task_qa.encode_qa(c, tok, [_qa_example()])
  q = tok.encode('q')[0]
  a, b, cc, d, e, f, g, h = tok.encode('a b c d e f g h')
  # Window = 8 - [CLS] q [SEP] - [SEP] = 4 pieces; starts 0, 2, 4.
  assert data.features['tokens'].tolist() == [
      [CLS, q, SEP, a, b, cc, d, SEP], [CLS, q, SEP, cc, d, e, f, SEP],
      [CLS, q, SEP, e, f, g, h, SEP]]
  assert data.features['token_types'][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
  # The answer (pieces d e) is whole only in window 1, at rows 4..5; elsewhere (0, 0).
  assert data.features['spans'].tolist() == [[0, 0], [4, 5], [0, 0]]
  assert data.host['token_word'][1].tolist() == [-1, -1, -1, 2, 3, 4, 5, -1]
  # Max context: d and e have min(left, right) = 1 in window 1 (0 elsewhere), f has 1 in
  # window 2 (0 in window 1); c is best in window 0, g and h only exist in window 2.
  assert data.host['max_context'].astype(int).tolist() == [
      [0, 0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0]]
  assert task_qa.window_starts(10, 4, 3) == [0, 3, 6]


def test_span_decoding_picks_the_best_valid_pair():
  tok = FakeTokenizer()
  c = _config('bert', 'qa', 8, doc_stride=2, max_query_length=4)
  data = task_qa.encode_qa(c, tok, [_qa_example()])
  # Rows 3..6 hold words 0-3 (window 0), 2-5 (window 1), 4-7 (window 2); max context:
  # window 0 rows 3-5, window 1 rows 4-5, window 2 rows 4-6 (see the test above).
  start, end = np.full((3, 8), -100.0), np.full((3, 8), -100.0)
  start[0, 1] = end[0, 1] = 50.0  # the question: never an answer
  start[2, 6], end[2, 4] = 40.0, 40.0  # end before start
  start[0, 6] = end[0, 6] = 30.0  # word 3 alone, but window 0 is not its max context
  start[0, 3] = 10.0  # with end[0, 6]: words 0..3, 4 pieces
  start[1, 4], end[1, 5], end[1, 3] = 5.0, 4.0, 6.0  # words 3..4 'd e' (9); end 3 < start
  args = (start, end, data.host['token_word'], data.host['max_context'])
  spans = task_qa.best_spans(*args, n_best=5, max_answer_length=3)
  assert spans[0][1:] == (3, 4) and spans[0][0] == pytest.approx(9.0)
  assert task_qa.decode_answers(data, start, end, n_best=5, max_answer_length=3) == ['d e']
  # Allowed 4 pieces, 'a b c d' (score 40) wins.
  assert task_qa.decode_answers(data, start, end, n_best=5, max_answer_length=4) == ['a b c d']
  # n_best=1 pairs only each window's top start and top end: none is valid.
  assert task_qa.decode_answers(data, start, end, n_best=1, max_answer_length=3) == ['']


def test_text_rows_for_t5_and_gpt():
  tok = FakeTokenizer()
  example = {'text': 'good film', 'label': 1}
  kw = dict(format='text', label_words='bad,great', prompt='rate: ', target_prompt=' so',
            target_length=3)
  source, bridge, target = tok.encode('rate: good film'), tok.encode('so'), tok.encode('great')
  assert (len(source), len(bridge), len(target)) == (6, 1, 2)  # 3-character pieces
  t5 = tasks.encode_text(_config('t5', 'classification', 8, **kw), tok, [example]).features
  assert t5['tokens'][0].tolist() == source + [EOS, 0]
  assert t5['targets'][0].tolist() == target + [EOS]
  assert t5['target_segment_ids'][0].tolist() == [1, 1, 1]
  gpt = tasks.encode_text(_config('gpt', 'classification', 12, **kw), tok, [example])
  row = source + bridge + target + [EOS]
  assert gpt.features['tokens'][0].tolist() == row + [0, 0]
  # Loss where the next token is a target token: positions 6 ('so') to 8.
  assert np.nonzero(gpt.features['loss_mask'][0])[0].tolist() == [6, 7, 8]
  assert gpt.host['prompt_length'].tolist() == [7]
  # A long source is cut so that the whole target still fits: 10 - 3 - 1 = 6 pieces.
  short = tasks.encode_text(_config('gpt', 'classification', 10, **kw), tok,
                            [{'text': 'good film good film', 'label': 0}])
  assert short.features['tokens'][0, :7].tolist() == source + bridge  # '... good film'
  assert short.features['tokens'][0, 7:].tolist() == tok.encode('bad') + [EOS, 0]


def test_iterator_shuffles_shards_and_resumes():
  features = {'tokens': np.arange(20)[:, None].repeat(3, 1), 'label': np.arange(20)[:, None]}
  whole = tasks.TaskIterator(features, global_batch=8, seed=1)
  parts = [tasks.TaskIterator(features, global_batch=8, seed=1, process_index=p,
                              process_count=2) for p in range(2)]
  seen = []
  for _ in range(5):  # 2 batches per epoch (the last 4 rows dropped), then a new order
    batch = next(whole)['label'][:, 0].tolist()
    assert sum((next(p)['label'][:, 0].tolist() for p in parts), []) == batch
    seen.append(batch)
  assert len(set(seen[0] + seen[1])) == 16 and seen[0] + seen[1] != seen[2] + seen[3]
  resumed = tasks.TaskIterator(features, global_batch=8, seed=1)
  state = whole.get_state()
  resumed.set_state(state)
  assert next(resumed)['label'].tolist() == next(whole)['label'].tolist()
  with pytest.raises(errors.UserError, match='seed'):
    tasks.TaskIterator(features, global_batch=8, seed=2).set_state(state)
  finite = list(tasks.TaskIterator(features, global_batch=8, infinite=False))
  assert len(finite) == 3 and finite[2]['label'][:, 0].tolist() == [16, 17, 18, 19, 0, 0, 0, 0]
  assert finite[2]['tokens'][4:].sum() == 0



def test_bucket_widths_and_row_lengths():
  assert tasks.bucket_widths(64, 4) == [16, 32, 48, 64]
  assert tasks.bucket_widths(10, 3) == [4, 7, 10]   # ceil(10/3), ceil(20/3), 10
  assert tasks.bucket_widths(5, 1) == [5]
  segment_ids = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
  assert tasks.row_lengths({'segment_ids': segment_ids}).tolist() == [2, 4, 0, 1]


def test_length_grouped_batches_are_cut_to_their_bucket():
  lengths = np.array([3, 12, 5, 16, 1, 9, 14, 2, 7, 11, 4, 16, 6, 10, 13, 8, 15, 1])  # 18 rows
  width = 16
  segment_ids = (np.arange(width)[None] < lengths[:, None]).astype(np.int32)
  features = {'tokens': segment_ids * (np.arange(18)[:, None] + 1), 'segment_ids': segment_ids,
              'label': np.arange(18)[:, None]}
  grouped = tasks.TaskIterator(features, global_batch=4, seed=3, length_buckets=4)
  parts = [tasks.TaskIterator(features, global_batch=4, seed=3, length_buckets=4,
                              process_index=p, process_count=2) for p in range(2)]
  epoch = []
  for _ in range(4):  # 18 rows: 4 full batches an epoch
    batch = next(grouped)
    rows = batch['label'][:, 0]
    longest = lengths[rows].max()
    # The smallest of the widths 4, 8, 12, 16 that holds the batch's longest row.
    assert batch['tokens'].shape == (4, next(w for w in (4, 8, 12, 16) if w >= longest))
    assert (batch['segment_ids'].sum(1) == lengths[rows]).all() and batch['label'].shape == (4, 1)
    # One sorted chunk: a batch holds 4 consecutive lengths of the sorted epoch.
    together = [next(p) for p in parts]
    assert sum((t['label'][:, 0].tolist() for t in together), []) == rows.tolist()
    assert all(t['tokens'].shape == (2, batch['tokens'].shape[1]) for t in together)
    epoch += rows.tolist()
  used = np.sort(lengths[epoch])
  assert len(set(epoch)) == 16
  for k in range(4):  # the batches are the sorted rows cut in fours (all 16 in one chunk)
    assert sorted(lengths[epoch[4 * k:4 * k + 4]].tolist()) in [
        used[4 * j:4 * j + 4].tolist() for j in range(4)]
  with pytest.raises(errors.UserError, match='length_buckets'):
    tasks.TaskIterator(features, global_batch=4, seed=3).set_state(grouped.get_state())


MINI_PLAY = """THE TRAGEDY OF BRUTUS

Dramatis Personae

BRUTUS, a Roman.
PORTIA, wife to Brutus.
A Soothsayer.

SCENE: Rome.


ACT I.

SCENE I. Rome. Brutus's orchard.

BRUTUS.
Portia, the soothsayer speaks of Rome and Sardis.
[Enter Portia.]

PORTIA.
Good Brutus, a soothsayer is a man.

Ham.
Sardis is far.
"""


def test_silver_labels_of_a_hand_built_play():
  play = task_corpora.parse_play(MINI_PLAY)
  assert [(s['tag'], s['lines']) for s in play['speeches']] == [
      ('BRUTUS', ['Portia, the soothsayer speaks of Rome and Sardis.']),
      ('PORTIA', ['Good Brutus, a soothsayer is a man.']), ('Ham', ['Sardis is far.'])]
  # 'Soothsayer' is in the cast list but also written in lower case: not a name.
  # 'Sardis' is a place of another play's heading; "Brutus's" names a possessor.
  persons, places = task_corpora.gazetteers(play, MINI_PLAY, {'Sardis', 'Soothsayer'})
  assert persons == {'Brutus', 'Portia'} and places == {'Rome', 'Sardis'}
  words = task_corpora.words("Portia, Brutus's Rome")
  assert words == ['Portia', ',', 'Brutus', "'s", 'Rome']
  assert task_corpora.tag_words(['Portia', 'Brutus', 'of', 'Rome'], persons, places) == [
      'B-PER', 'I-PER', 'O', 'B-LOC']


@pytest.mark.parametrize('name, sizes', [
    ('shakespeare_ner', {'train': 14_580, 'validation': 849, 'test': 650}),
    ('shakespeare_qa', {'train': 11_498, 'validation': 694, 'test': 554})])
def test_offline_sets_have_the_documented_splits(name, sizes):
  builder = task_corpora.prepare(name)
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == sizes
  assert f'{sizes["train"]:,}' in task_corpora.__doc__
  c = ml_collections.ConfigDict({'task': {'dataset': name, 'input_fields': '',
                                          'target_field': 'id'},
                                 'data': {'data_dir': '', 'download': False,
                                          'network_probe': 'x:1'}})
  for ex in tasks.read_examples(c, 'validation', limit=50):
    if name == 'shakespeare_ner':
      assert len(ex['tokens']) == len(ex['ner']) and 0 < len(ex['tokens']) <= 48
      assert set(ex['ner']) <= set(range(len(task_corpora.NER_TAGS)))
    else:  # the answer is the speaker tag at its offset, followed by ': '
      (text,), (start,) = ex['answers']['text'], ex['answers']['answer_start']
      assert ex['context'][start:start + len(text) + 2] == text + ': '
      assert ex['question'].startswith('Who says "')
