"""Fine-tuning data: labelled TFDS examples -> fixed-shape int32 features, per family.

  examples = tasks.read_examples(config, 'validation')      # list of plain dicts
  data = tasks.encode(config, tokenizer, examples)           # TaskData: features + host info
  it = tasks.TaskIterator(data.features, global_batch=32, shuffle=True, infinite=True)

`config.task` says what to read and how to lay it out (see config_lib, `task` group):

Rows per task (format) and family:
  classification (head)  BERT [CLS] a [SEP] (b [SEP]); GPT a ([SEP] b) EOS, read at the
                         last token; T5 a ([SEP] b) EOS, its encoder only
  ner, qa (head)         BERT [CLS] words [SEP] / [CLS] q [SEP] window [SEP]; GPT and T5
                         words EOS / q [SEP] window EOS
  classification, summarization, translation (text; GPT and T5 only)
                         GPT prompt src target_prompt tgt EOS (one row); T5 encoder
                         prompt src EOS, decoder tgt EOS (the label word for classes)

Features (all [N, ...] int32; padding rows are all zero, so segment id 0 = no loss):
  tokens, segment_ids (1 real / 0 pad), positions, token_types (BERT pairs: 1 for b)
  label [N, 1]                        classification head
  tags, tag_mask [N, L]               NER: the word's tag on its first sub-word, mask 1 there
  spans [N, 2]                        QA: start, end token (0, 0 when the window lacks it)
  targets, target_segment_ids [N, T]  T5 text-to-text: the target ids (EOS ended)
  loss_mask [N, L]                    GPT continuation: 1 where the next token is target

Labels are aligned to the first sub-word of each word (as BERT and HF do): NER words are
encoded one at a time (SentencePiece cuts at spaces anyway), the rest of a word's pieces
get mask 0, and words cut off by `data.seq_len` are predicted 'O' at evaluation.  QA
windows (document stride) and span decoding live in `qa.py`, the row layouts in `features.py`.

Legend: N examples (or QA windows), L row length (data.seq_len), T target length, C classes.
"""
from __future__ import annotations

import copy

import numpy as np
import tensorflow_datasets as tfds

from ptlm_jax import families
from ptlm_jax.data import local_files, sources, vocab
from ptlm_jax.errors import ConfigError, UserError
from ptlm_jax.finetune import corpora as task_corpora, qa as task_qa
from ptlm_jax.finetune.features import TaskData, layout, pad_rows, row_features, word_pieces


# ---------------------------------------------------------------------------
# Reading.

def _decode(value):
  if isinstance(value, bytes):
    return value.decode('utf-8')
  if isinstance(value, dict):
    return {k: _decode(v) for k, v in value.items()}
  if isinstance(value, np.ndarray) and value.dtype == object:
    return [_decode(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  return value.item() if isinstance(value, np.generic) else value


def builder_for(config):
  """The prepared TFDS builder of config.task.dataset (offline sets prepared on demand)."""
  name, d = config.task.dataset, config.data
  if name.split('/')[0] in task_corpora.BUILDERS:
    return task_corpora.prepare(name, d.data_dir)
  return sources.get_builder(name, data_dir=d.data_dir, download=d.download,
                             network_probe=d.network_probe)


_READ_CACHE: dict[tuple, list[dict]] = {}  # (dataset, data dir, split, limit) -> examples
_READ_CACHE_SIZE = 8


def read_examples(config, split: str, limit: int = 0) -> list[dict]:
  """A split (TFDS slicing allowed: 'train[:2000]') as plain dicts, text as str.

  With `task.train_file` the split comes from that file (or validation_file, test_file).
  A prepared TFDS split does not change, so the last few reads are kept in memory (a
  sweep of runs in one process, as the objective comparison, reads each split once);
  each call gets its own copy.
  """
  if config.task.get('train_file'):  # absent in hand-made and older configs
    return local_files.read_task_split(config, split, limit)
  builder = builder_for(config)
  try:
    # No auto-cache: with `limit` the pass stops early, which TFDS' cache warns about.
    dataset = builder.as_dataset(split=split, shuffle_files=False,
                                 read_config=tfds.ReadConfig(try_autocache=False))
  except (KeyError, ValueError) as e:
    raise UserError(f'TFDS dataset {builder.info.full_name!r} has no split {split!r} (config.'
                    f'data.train_split / eval_split): it has {sorted(builder.info.splits)}') from e
  if limit:
    dataset = dataset.take(limit)
  fields = builder.info.features.keys()
  t = config.task
  for field in [f for f in t.input_fields.split(',') if f] + [t.target_field]:
    if field not in fields:
      raise ConfigError('task.input_fields' if field != t.target_field else 'task.target_field',
                        field, f'features of {builder.info.full_name}: {sorted(fields)}')
  key = (builder.info.full_name, str(builder.data_dir), split, limit)
  if key not in _READ_CACHE:
    while len(_READ_CACHE) >= _READ_CACHE_SIZE:
      _READ_CACHE.pop(next(iter(_READ_CACHE)))
    _READ_CACHE[key] = [_decode(example) for example in tfds.as_numpy(dataset)]
  return copy.deepcopy(_READ_CACHE[key])


def label_names(config) -> list[str]:
  """Class names of the label field (classification) or of the tag sequence (NER)."""
  if config.task.get('train_file'):  # absent in hand-made and older configs
    return local_files.label_names(config)
  feature = builder_for(config).info.features[config.task.target_field]
  feature = getattr(feature, 'feature', feature)  # Sequence(ClassLabel) for tags
  names = getattr(feature, 'names', None)
  if not names:
    raise ConfigError('task.target_field', config.task.target_field,
                      f'a ClassLabel feature of {config.task.dataset}')
  return list(names)


def _fields(config) -> list[str]:
  return [f for f in config.task.input_fields.split(',') if f]


# ---------------------------------------------------------------------------
# Encoders, one per task kind.

def encode_classification(config, tokenizer, examples: list[dict]) -> TaskData:
  fields, length, family = _fields(config), config.data.seq_len, config.model.family
  columns = [tokenizer.encode_batch([ex[f] for ex in examples]) for f in fields]
  rows = [layout(family, c[0], c[1] if len(c) > 1 else None, length, tokenizer.vocab_info)
          for c in zip(*columns)]
  features = row_features([r[0] for r in rows], [r[1] for r in rows], length)
  features['label'] = np.array([[ex[config.task.target_field]] for ex in examples], np.int32)
  return TaskData(features, examples)


def encode_ner(config, tokenizer, examples: list[dict]) -> TaskData:
  """Token classification: the tag on each word's first sub-word (mask 1), others mask 0."""
  length, family, field = config.data.seq_len, config.model.family, config.task.target_field
  info = tokenizer.vocab_info
  start, end = ([info.cls_id], [info.sep_id]) if families.get(family).bidirectional else ([], [info.eos_id])
  cache: dict[str, list[int]] = {}
  n = len(examples)
  tags, mask = np.zeros((n, length), np.int32), np.zeros((n, length), np.int32)
  word_index = np.full((n, length), -1, np.int32)  # host: which word a first sub-word starts
  token_rows = []
  for i, ex in enumerate(examples):
    row = list(start)
    for w, (pieces, tag) in enumerate(zip(word_pieces(tokenizer, ex['tokens'], cache),
                                          ex[field])):
      if len(row) + len(pieces) + len(end) > length:
        break  # later words do not fit: predicted 'O' at evaluation
      tags[i, len(row)], mask[i, len(row)], word_index[i, len(row)] = tag, 1, w
      row += pieces
    token_rows.append(row + end)
  features = row_features(token_rows, [[0] * len(r) for r in token_rows], length)
  features.update(tags=tags, tag_mask=mask)
  return TaskData(features, examples, {'word_index': word_index})


def text_input(config, example: dict) -> str:
  """The source text of a text-format example: prompt + field (or 'name: value' pairs)."""
  fields = _fields(config)
  if len(fields) == 1:
    return config.task.prompt + example[fields[0]]
  return config.task.prompt + ' '.join(f'{f}: {example[f]}' for f in fields)


def label_words(config) -> list[str]:
  return [w.strip() for w in config.task.label_words.split(',')]


def target_text(config, example: dict) -> str:
  target = example[config.task.target_field]
  return label_words(config)[target] if config.task.name == 'classification' else target


def encode_text(config, tokenizer, examples: list[dict], targets: list[str] | None = None
                ) -> TaskData:
  """Text-to-text (T5) or prompt + continuation (GPT) rows; `targets` overrides the targets.

  T5: tokens/segment_ids/positions = the encoder input (prompt + source, EOS ended),
  targets/target_segment_ids [N, T].  GPT: one row prompt + source + target_prompt +
  target + EOS (the source is cut so that T target tokens fit), loss_mask [N, L] marks the
  positions whose next token is a target token; host['prompt_length'] = where the target
  starts (generation continues from there).
  """
  length, t_len = config.data.seq_len, config.task.target_length
  eos = tokenizer.vocab_info.eos_id
  sources_ = tokenizer.encode_batch([text_input(config, ex) for ex in examples])
  targets = targets if targets is not None else [target_text(config, ex) for ex in examples]
  target_ids = [ids[:t_len - 1] + [eos] for ids in tokenizer.encode_batch(targets)]
  if families.get(config.model.family).encoder_decoder:
    rows = [ids[:length - 1] + [eos] for ids in sources_]
    features = row_features(rows, [[0] * len(r) for r in rows], length)
    features['targets'] = pad_rows(target_ids, t_len)
    features['target_segment_ids'] = row_features(target_ids, target_ids, t_len)['segment_ids']
    return TaskData(features, examples, {'references': targets})
  bridge = tokenizer.encode(config.task.target_prompt) if config.task.target_prompt else []
  # An empty prompt would leave nothing to predict the first target token from.
  prompts = [(ids[:length - t_len - len(bridge)] + bridge) or [eos] for ids in sources_]
  rows = [p + t for p, t in zip(prompts, target_ids)]
  features = row_features(rows, [[0] * len(r) for r in rows], length)
  loss_mask = np.zeros((len(rows), length), np.int32)
  for i, (p, t) in enumerate(zip(prompts, target_ids)):
    loss_mask[i, len(p) - 1:len(p) + len(t) - 1] = 1  # position j predicts token j + 1
  features['loss_mask'] = loss_mask
  return TaskData(features, examples, {'references': targets,
                                       'prompt_length': np.array([len(p) for p in prompts])})


def encode(config, tokenizer, examples: list[dict]) -> TaskData:
  """The features of `examples` for config.task (name and format) and the model family."""
  t = config.task
  if t.format == 'text':
    return encode_text(config, tokenizer, examples)
  if t.name == 'classification':
    return encode_classification(config, tokenizer, examples)
  if t.name == 'ner':
    return encode_ner(config, tokenizer, examples)
  return task_qa.encode_qa(config, tokenizer, examples)


# ---------------------------------------------------------------------------
# Batches.

# Features with one entry per row position: cut to a batch's width (`length_buckets`).
POSITION_FEATURES = ('tokens', 'segment_ids', 'positions', 'token_types', 'tags', 'tag_mask',
                     'loss_mask')
GROUP_CHUNK_BATCHES = 50  # rows sorted by length within chunks of this many batches (HF: 50)


def row_lengths(features: dict[str, np.ndarray]) -> np.ndarray:
  """Each row's length: one past its last real position (segment id > 0)."""
  real_NxL = features['segment_ids'] > 0
  width = real_NxL.shape[1]
  return np.where(real_NxL.any(1), width - real_NxL[:, ::-1].argmax(1), 0)


def bucket_widths(seq_len: int, buckets: int) -> list[int]:
  """The `buckets` batch widths: equal steps up to seq_len (4 of 64: 16, 32, 48, 64)."""
  return sorted({-(-seq_len * k // buckets) for k in range(1, buckets + 1)})


def length_grouped(order: np.ndarray, lengths: np.ndarray, global_batch: int,
                   rng: np.random.Generator) -> np.ndarray:
  """`order` regrouped so that each batch holds rows of similar length (HF group_by_length).

  Chunks of GROUP_CHUNK_BATCHES batches of the shuffled order are sorted by length, cut
  into batches, and the batches of a chunk put in random order; rows past the last full
  batch stay at the end (an infinite pass never reads them), so no length is dropped more
  often than another.
  """
  full = len(order) - len(order) % global_batch
  out, chunk = [], GROUP_CHUNK_BATCHES * global_batch
  for start in range(0, full, chunk):
    rows = order[start:min(start + chunk, full)]
    rows = rows[np.argsort(-lengths[rows], kind='stable')].reshape(-1, global_batch)
    out.append(rows[rng.permutation(len(rows))].reshape(-1))
  return np.concatenate(out + [order[full:]])


class TaskIterator:
  """Batches of feature rows: shuffled per epoch (seed, epoch) and split over processes.

  Global batch i of an epoch is rows order[i*G:(i+1)*G]; process p takes its
  B = G / process_count consecutive rows of it, so batches do not depend on the number
  of processes.  Infinite: epochs follow each other, a last partial batch is dropped.
  Finite: one pass in order, the last batch filled up with all-zero rows.
  `length_buckets` N > 0 (training, `data.length_buckets`): rows of similar length are
  batched together (`length_grouped`) and each batch is cut to the smallest of N widths
  that holds its longest row (`bucket_widths`), so at most N shapes are compiled and
  padding costs little; the width comes from the global batch, the same on every process.
  `get_state()` / `set_state()` are the (epoch, position) cursor, as the loop expects.
  """

  def __init__(self, features: dict[str, np.ndarray], *, global_batch: int, shuffle: bool = True,
               seed: int = 0, infinite: bool = True, process_index: int = 0,
               process_count: int = 1, length_buckets: int = 0):
    self.features = features
    self.rows = len(next(iter(features.values())))
    if infinite and self.rows < global_batch:
      raise UserError(f'the training split has {self.rows} rows, fewer than one batch '
                      f'(train.batch_size={global_batch})')
    self.global_batch, self.shuffle, self.seed = global_batch, shuffle, seed
    self.infinite = infinite
    self.local = global_batch // process_count
    self.offset = process_index * self.local
    self.epoch, self.position = 0, 0
    self.length_buckets = length_buckets
    if length_buckets:
      self.lengths = row_lengths(features)
      self.widths = bucket_widths(features['tokens'].shape[1], length_buckets)
    self._epoch_order = (None, None)

  def __iter__(self):
    return self

  def _order(self) -> np.ndarray:
    if self._epoch_order[0] != self.epoch:
      order = np.arange(self.rows)
      if self.infinite and (self.shuffle or self.length_buckets):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.rows) if self.shuffle else order
        if self.length_buckets:
          order = length_grouped(order, self.lengths, self.global_batch, rng)
      self._epoch_order = (self.epoch, order)
    return self._epoch_order[1]

  def __next__(self) -> dict[str, np.ndarray]:
    if self.infinite and self.position + self.global_batch > self.rows:
      self.epoch, self.position = self.epoch + 1, 0
    if self.position >= self.rows:
      raise StopIteration
    rows = self._order()[self.position:self.position + self.global_batch]
    self.position += self.global_batch
    width = None
    if self.length_buckets:
      longest = self.lengths[rows].max()
      width = next(w for w in self.widths if w >= longest)
    rows = rows[self.offset:self.offset + self.local]
    batch = {k: v[rows, :width] if k in POSITION_FEATURES and width else v[rows]
             for k, v in self.features.items()}
    if len(rows) < self.local:  # the last batch of a finite pass
      batch = {k: np.concatenate([v, np.zeros((self.local - len(rows),) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    return batch

  def get_state(self) -> dict:
    return dict(epoch=self.epoch, position=self.position, rows=self.rows, seed=self.seed,
                global_batch=self.global_batch, shuffle=self.shuffle,
                length_buckets=self.length_buckets)

  def set_state(self, state: dict) -> None:
    mine = self.get_state()
    state = {'length_buckets': 0, **state}  # saved before length_buckets existed
    differs = [k for k in ('rows', 'seed', 'global_batch', 'shuffle', 'length_buckets')
               if state.get(k) != mine[k]]
    if differs:
      saved, now = [state.get(k) for k in differs], [mine[k] for k in differs]
      raise UserError(f'cannot resume the task data: the saved state differs in {differs} '
                      f'(saved {saved}, now {now})')
    self.epoch, self.position = int(state['epoch']), int(state['position'])

  def close(self) -> None:
    pass
