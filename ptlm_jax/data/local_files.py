r"""Your own data: local text, JSONL, CSV and TSV files as a corpus or as a task's splits.

Pretraining (`config.data.corpus = 'files'`): `data.train_files` / `data.validation_files`
are comma-separated glob patterns (`'books/*.txt,web/*.jsonl.gz'`), read in sorted order.
What a document is depends on the extension (each may end in `.gz`):

  .txt, .md     BERT's pretraining format: documents are separated by blank lines; the
                lines of one document are joined with '\n'.  A file without blank lines
                is one document.
  .jsonl        one JSON object per line; the document is its `data.text_key` field.
  .csv, .tsv    a header row, then one document per row in column `data.text_key`.

Files are streamed line by line (nothing holds a whole file), so `sources.texts` hands
them to the tokenizer trainer as it does a TFDS split.  The packed pipeline reads them in
chunks (`corpus_chunks`): byte ranges of CHUNK_BYTES of an uncompressed .txt / .jsonl
file, found from file sizes alone, so the first batch never waits for a scan of the
corpus; a chunk holds the documents whose first line starts in its range.  An error in a
chunk still names the line in the file (counted only when there is an error).

Fine-tuning (`config.task.train_file` / `validation_file` / `test_file`, one file each,
picked for the split names 'train' / 'validation' / 'test'): .csv, .tsv or .jsonl rows
with the columns `task.input_fields` and `task.target_field`.  Classification labels are
strings (or numbers) mapped to ids in sorted order (numerically when all are integers),
or in the order of `task.label_names`; NER (.jsonl only) takes a list of words and a list
of tags per row; QA (.jsonl) SQuAD rows {question, context, answers: {text, answer_start}}.

Every problem with a file is a `UserError` of one line naming the file, the line and what
was expected; `resolve(config)` (called by `main.run` before anything compiles) checks
every task file and the validation corpus, and fills in what the data decides:
`model.num_classes` (and for text-format classification `task.label_words`), and
`train.steps` etc. where the config leaves them at -1 (3 epochs of the train file).

  texts = local_files.corpus_texts(config, 'train')          # iterator of str
  rows = local_files.read_task_split(config, 'validation')   # list of dicts, labels as ids
"""
from __future__ import annotations

import codecs
import csv
import glob
import gzip
import hashlib
import json
import math
import os
import re
import sys
from typing import Iterator

from ptlm_jax import config_lib
from ptlm_jax.errors import ConfigError, UserError

TEXT, JSONL, CSV, TSV = '.txt', '.jsonl', '.csv', '.tsv'
_FORMATS = {'.txt': TEXT, '.text': TEXT, '.md': TEXT, '.jsonl': JSONL, '.csv': CSV, '.tsv': TSV}
_FORMAT_VERSION = 1  # bump when what a file yields changes (token caches are keyed by it)
EPOCHS = 3  # the handout's recipe, for a train.steps left at -1
CHUNK_BYTES = 64 << 10  # corpus files are read in byte ranges of this size (corpus_chunks)

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long documents in one CSV cell


def file_format(path: str) -> str:
  """TEXT, JSONL, CSV or TSV from the extension (a trailing .gz is looked through)."""
  stem = path[:-3] if path.endswith('.gz') else path
  ext = os.path.splitext(stem)[1].lower()
  if ext not in _FORMATS:
    raise UserError(f'{path}: unknown file type {ext or "(none)"!r}: expected one of '
                    f'{sorted(_FORMATS)} (optionally + .gz)')
  return _FORMATS[ext]


def expand(patterns: str, field: str) -> list[str]:
  """The files matching comma-separated glob `patterns` (config `field`), sorted per pattern."""
  paths = []
  for pattern in [p.strip() for p in str(patterns).split(',') if p.strip()]:
    matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True)
                     if os.path.isfile(p))
    if not matches:
      raise UserError(f'config.{field}: no file matches {pattern!r} (relative to '
                      f'{os.getcwd()})')
    paths += matches
  if not paths:
    raise UserError(f'config.{field} is empty: expected files, e.g. \'data/*.txt\'')
  for path in paths:
    file_format(path)
  return paths


# ---------------------------------------------------------------------------
# Reading one file.

def _lines(path: str, start: int = 0) -> Iterator[tuple[int, str]]:
  """(line number, text) of a UTF-8 file, newline kept; decoding errors name the line."""
  for number, _, line in _lines_at(path, start):
    yield number, line


def _lines_at(path: str, start: int = 0) -> Iterator[tuple[int, int, str]]:
  """(line number, byte offset, text) from the first line that starts at or after `start`.

  Numbers count from 1 at that line (the caller knows where it started reading).
  """
  opener = gzip.open if path.endswith('.gz') else open
  try:
    f = opener(path, 'rb')
  except OSError as e:
    raise UserError(f'{path}: cannot open ({e.strerror or e})') from e
  # A byte-order mark can only open the file; '\n' never occurs inside a UTF-8 character,
  # so decoding can start at any line.
  decoder = codecs.getincrementaldecoder('utf-8-sig' if start == 0 else 'utf-8')()
  number, offset = 0, 0
  with f:
    try:
      if start > 0:
        f.seek(start - 1)
        offset = start - 1 + len(f.readline())  # the rest of the line holding start - 1
      for number, raw in enumerate(f, 1):
        yield number, offset, decoder.decode(raw)
        offset += len(raw)
      decoder.decode(b'', final=True)  # a character cut off at the end of the file
    except UnicodeDecodeError as e:
      raise UserError(f'{path}, line {number}: not UTF-8 text ({e.reason} at byte {e.start} '
                      'of the line); save the file as UTF-8') from e
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz
      raise UserError(f'{path}, line {number + 1}: cannot read ({e})') from e


def _line_before_is_blank(path: str, offset: int) -> bool:
  """Whether the line that ends just before byte `offset` (a line start) is blank."""
  if offset == 0:
    return True
  with open(path, 'rb') as f:
    end, line = offset - 1, b''  # byte offset - 1 is the '\n' that ends that line
    while end > 0:
      step = min(end, 1 << 12)
      f.seek(end - step)
      block = f.read(step)
      cut = block.rfind(b'\n')
      line = block[cut + 1:] + line
      if cut >= 0 or re.search(rb'[!-~]', line):  # the whole line, or a visible character
        break
      end -= step
  return not line.decode('utf-8', 'replace').strip()


def _empty(path: str) -> UserError:
  return UserError(f'{path}: the file is empty: expected at least one '
                   f'{"document" if file_format(path) == TEXT else "row"}')


def records(path: str, fields: list[str], start: int = 0,
            stop: int | None = None) -> Iterator[tuple[int, dict]]:
  """(line number, record) for each row of a JSONL / CSV / TSV file, checked for `fields`.

  CSV/TSV values are str; JSONL values keep their JSON type.  A record missing a field
  is an error naming the line; an empty file (or a header without rows) too.  JSONL
  files can be read in part: the lines that start in bytes [start, stop) (numbered from
  the first of them).
  """
  kind = file_format(path)
  if kind == TEXT:
    raise UserError(f'{path}: plain text has no columns: expected .csv, .tsv or .jsonl')
  whole = start == 0 and stop is None
  if not whole and kind != JSONL:
    raise ValueError(f'{path}: only JSONL and text files are read in byte ranges')
  seen = False
  if kind == JSONL:
    for number, offset, line in _lines_at(path, start):
      if stop is not None and offset >= stop:
        break
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise UserError(f'{path}, line {number}: not a JSON object ({e.msg} at column '
                        f'{e.colno})') from e
      if not isinstance(record, dict):
        raise UserError(f'{path}, line {number}: expected a JSON object, got '
                        f'{type(record).__name__}')
      missing = [f for f in fields if f not in record]
      if missing:
        raise UserError(f'{path}, line {number}: no field {missing[0]!r}: expected fields '
                        f'{fields}, the row has {sorted(record)}')
      seen = True
      yield number, record
  else:
    lines = _lines(path)
    numbered = {}  # the line number where the csv reader last took a line

    def text_lines():
      for number, line in lines:
        numbered['n'] = number
        yield line

    reader = csv.reader(text_lines(), delimiter='\t' if kind == TSV else ',')
    try:
      header = next(reader, None)
      if header is None:
        raise _empty(path)
      header = [h.strip() for h in header]
      missing = [f for f in fields if f not in header]
      if missing:
        raise UserError(f'{path}, line 1: the header has no column {missing[0]!r}: expected '
                        f'columns {fields}, the header has {header}')
      for row in reader:
        if not row or not any(v.strip() for v in row):
          continue  # a blank line
        number = numbered['n']
        if len(row) != len(header):
          raise UserError(f'{path}, line {number}: {len(row)} values for the {len(header)} '
                          f'columns of the header {header}')
        seen = True
        yield number, dict(zip(header, row))
    except csv.Error as e:
      raise UserError(f'{path}, line {numbered.get("n", 0)}: not valid '
                      f'{"TSV" if kind == TSV else "CSV"} ({e})') from e
  if not seen and whole:
    raise _empty(path)


def documents(path: str, text_key: str, start: int = 0,
              stop: int | None = None) -> Iterator[tuple[int, str]]:
  """(first line, text) of each document of a corpus file (see the module docstring).

  With a byte range: the documents whose first line starts in [start, stop) (a text
  document may run on past `stop`), numbered from the first line read.
  """
  whole = start == 0 and stop is None
  if file_format(path) != TEXT:
    for number, record in records(path, [text_key], start, stop):
      text = record[text_key]
      if not isinstance(text, str) or not text.strip():
        raise UserError(f'{path}, line {number}: no text in field {text_key!r} (expected '
                        f'a non-empty string, got {text!r})')
      yield number, text
    return
  paragraph, first, seen = [], 0, False
  # Inside a paragraph that started before `start` (an earlier range owns it): skip it.
  skipping = start > 0 and not _line_before_is_blank(path, _first_line_start(path, start))
  for number, offset, line in _lines_at(path, start):
    line = line.rstrip('\r\n')
    if skipping:
      skipping = bool(line.strip())
      continue
    if line.strip():
      if not paragraph and stop is not None and offset >= stop:
        break  # the next range's document
      first = first or number
      paragraph.append(line)
    elif paragraph:
      seen = True
      yield first, '\n'.join(paragraph)
      paragraph, first = [], 0
  if paragraph:
    seen = True
    yield first, '\n'.join(paragraph)
  if not seen and whole:
    raise _empty(path)


def _first_line_start(path: str, start: int) -> int:
  """The offset of the first line that starts at or after `start` (as _lines_at seeks)."""
  if start == 0:
    return 0
  with open(path, 'rb') as f:
    f.seek(start - 1)
    return start - 1 + len(f.readline())


# ---------------------------------------------------------------------------
# Pretraining corpus.

def corpus_files(config, split: str) -> list[str]:
  """The files of a split of the 'files' corpus: data.train_split -> data.train_files, ..."""
  d = config.data
  if split == d.train_split:
    return expand(d.train_files, 'data.train_files')
  if split == d.eval_split:
    return expand(d.validation_files, 'data.validation_files')
  raise UserError(f'corpus files has the splits {d.train_split!r} (data.train_files) and '
                  f'{d.eval_split!r} (data.validation_files), not {split!r}')


def corpus_texts(config, split: str, shard: tuple[int, int] = (0, 1)) -> Iterator[str]:
  """Documents of a split in file order; process `index` of `count` keeps every count-th."""
  index, count = shard
  i = 0
  for path in corpus_files(config, split):
    for _, text in documents(path, config.data.text_key):
      if i % count == index:
        yield text
      i += 1
  if i < count:
    raise UserError(f'{split} files of corpus files have {i} documents, fewer than the '
                    f'{count} processes')


def corpus_chunks(config, split: str) -> list[tuple[str, int, int]]:
  """The split's files as chunks (path, start, stop), from file sizes alone (nothing read).

  An uncompressed text or JSONL file is cut into byte ranges of CHUNK_BYTES: a chunk
  holds the documents whose first line starts in its range, so every document is in
  exactly one chunk.  A .gz, CSV or TSV file cannot be entered in the middle (no seeking
  in a compressed stream; a CSV cell may hold newlines) and is one chunk (stop = -1):
  split a large one into several files for finer shuffling and a quick first batch.
  """
  chunks = []
  for path in corpus_files(config, split):
    size = os.path.getsize(path)
    if path.endswith('.gz') or file_format(path) in (CSV, TSV) or size <= CHUNK_BYTES:
      chunks.append((path, 0, -1))
    else:
      chunks += [(path, s, min(s + CHUNK_BYTES, size)) for s in range(0, size, CHUNK_BYTES)]
  return chunks


def chunk_texts(config, chunk: tuple[str, int, int]) -> list[str]:
  """The documents of one chunk of `corpus_chunks`; errors name the line in the file."""
  path, start, stop = chunk
  try:
    return [text for _, text in documents(path, config.data.text_key, start,
                                          None if stop < 0 else stop)]
  except UserError as e:
    if start == 0:
      raise
    # Lines were numbered from the chunk's first line: count the lines before it, once,
    # now that a message needs the line number in the file.
    before = _count_newlines(path, _first_line_start(path, start))
    message = re.sub(rf'^{re.escape(path)}, line (\d+)',
                     lambda m: f'{path}, line {int(m.group(1)) + before}', str(e))
    raise UserError(message) from e


def _count_newlines(path: str, end: int) -> int:
  with open(path, 'rb') as f:
    count, left = 0, end
    while left > 0:
      block = f.read(min(left, 1 << 24))
      count, left = count + block.count(b'\n'), left - len(block)
  return count


def fingerprint(config, split: str, shard: tuple[int, int] = (0, 1)) -> str:
  """Content key of a split from the files' names, sizes and times (nothing is read)."""
  key = [_FORMAT_VERSION, config.data.text_key, list(shard)]
  for path in corpus_files(config, split):
    stat = os.stat(path)
    key.append([os.path.abspath(path), stat.st_size, stat.st_mtime_ns])
  return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# Fine-tuning splits.

def task_file(config, split: str) -> str:
  """The task file for a split name: train / validation / test (or data.*_split)."""
  t, d = config.task, config.data
  name = split if split in ('train', 'validation', 'test') else {
      d.train_split: 'train', d.eval_split: 'validation'}.get(split, split)
  if name not in ('train', 'validation', 'test'):
    raise UserError(f'task files have the splits train, validation and test, not {split!r}')
  path = t[f'{name}_file']
  if not path:
    raise UserError(f'config.task.{name}_file is empty: the {name} split needs a .csv, '
                    '.tsv or .jsonl file')
  if not os.path.isfile(path):
    raise UserError(f'config.task.{name}_file: no such file {path!r} (relative to '
                    f'{os.getcwd()})')
  kind = file_format(path)
  if kind == TEXT:
    raise UserError(f'config.task.{name}_file={path!r}: expected .csv, .tsv or .jsonl '
                    '(plain text has no label column)')
  if config.task.name in ('ner', 'qa') and kind != JSONL:
    raise UserError(f'config.task.{name}_file={path!r}: {config.task.name} rows hold lists '
                    '(words and tags / answers): expected .jsonl')
  return path


def _fields(config) -> list[str]:
  t = config.task
  return [f for f in t.input_fields.split(',') if f] + [t.target_field]


def _label_key(value) -> str:
  """A label as the string that names its class ('pos', 3 -> '3', 1.0 -> '1')."""
  if isinstance(value, float) and value.is_integer():
    value = int(value)
  return str(value).strip()


def _sorted_labels(labels) -> list[str]:
  try:
    return sorted(labels, key=int)  # numbers as numbers: '2' before '10'
  except ValueError:
    return sorted(labels)


_NAMES_CACHE: dict = {}


def label_names(config) -> list[str]:
  """Class (classification) or tag (NER) names: task.label_names, or sorted from training."""
  t = config.task
  if t.label_names:
    names = [n.strip() for n in t.label_names.split(',')]
    if '' in names or len(set(names)) < len(names):
      raise ConfigError('task.label_names', t.label_names, 'distinct, non-empty '
                        'comma-separated names, in id order')
    return names
  path = task_file(config, 'train')
  stat = os.stat(path)
  key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns, t.name, t.target_field)
  if key not in _NAMES_CACHE:
    seen = set()
    for number, record in records(path, [t.target_field]):
      value = record[t.target_field]
      for label in (value if t.name == 'ner' else [value]):
        if label is None or _label_key(label) == '':
          raise UserError(f'{path}, line {number}: no label in {t.target_field!r}')
        seen.add(_label_key(label))
    _NAMES_CACHE[key] = _sorted_labels(seen)
  return _NAMES_CACHE[key]


def _label_id(config, ids: dict, label, path: str, number: int) -> int:
  key = _label_key(label)
  if key in ids:
    return ids[key]
  t = config.task
  if t.label_names:
    raise UserError(f'{path}, line {number}: label {key!r} is not in task.label_names '
                    f'({t.label_names})')
  raise UserError(f'{path}, line {number}: label {key!r} does not occur in the training '
                  f'file {t.train_file} (its labels: {", ".join(ids)}); list every class '
                  'in task.label_names')


def _text(config, record: dict, field: str, path: str, number: int):
  value = record[field]
  if config.task.name == 'ner':  # its one input field is the list of words
    ok = isinstance(value, list) and value and all(isinstance(w, str) for w in value)
    what = 'a non-empty list of words'
  else:
    ok = isinstance(value, str) and value.strip()
    what = 'non-empty text'
  if not ok:
    raise UserError(f'{path}, line {number}: no text in {field!r}: expected {what}, got '
                    f'{value!r}')
  return value


def read_task_split(config, split: str, limit: int = 0) -> list[dict]:
  """The rows of a task file as dicts (as tasks.read_examples): labels and tags as ids."""
  t = config.task
  path = task_file(config, split)
  names = label_names(config) if t.name in ('classification', 'ner') else []
  ids = {n: i for i, n in enumerate(names)}
  inputs = [f for f in t.input_fields.split(',') if f]
  examples = []
  for number, record in records(path, _fields(config)):
    example = dict(record)
    for field in inputs:
      example[field] = _text(config, record, field, path, number)
    target = record[t.target_field]
    if t.name == 'classification':
      example[t.target_field] = _label_id(config, ids, target, path, number)
    elif t.name == 'ner':
      if not isinstance(target, list) or len(target) != len(example[inputs[0]]):
        raise UserError(f'{path}, line {number}: expected one tag per word in '
                        f'{t.target_field!r} ({len(example[inputs[0]])} words), got {target!r}')
      example[t.target_field] = [_label_id(config, ids, tag, path, number) for tag in target]
    elif t.name == 'qa':
      answers = target if isinstance(target, dict) else {}
      if not (isinstance(answers.get('text'), list) and isinstance(
          answers.get('answer_start'), list)):
        raise UserError(f'{path}, line {number}: expected {t.target_field!r} as '
                        '{"text": [...], "answer_start": [...]} (SQuAD), got ' f'{target!r}')
    else:  # text to text
      example[t.target_field] = _text(config, record, t.target_field, path, number)
    # NER and QA encoders read fixed names (HF's): give the named fields those names too.
    if t.name == 'ner':
      example['tokens'] = example[inputs[0]]
    elif t.name == 'qa':
      example.update(question=example[inputs[0]], context=example[inputs[-1]],
                     answers=target)
    examples.append(example)
    if limit and len(examples) == limit:
      break
  return examples


# ---------------------------------------------------------------------------
# Before anything compiles.

def resolve(config) -> None:
  """Checks the local files `config` names and fills in what they decide (module doc).

  A no-op for configs without local files.  Reads every task file once (fine-tuning sets
  are small), the validation corpus once, and the first document of each train corpus
  file (the rest is read, and checked, when it is tokenised, also before compiling).
  """
  d, t = config.data, config.task
  mixed = [name for name, _ in config_lib.mixture(config)]
  if d.corpus == 'files' or 'files' in mixed:
    # Absolute globs: the saved config (and its tokenizer's cache key) then finds the
    # files from any directory, e.g. when a fine-tuning run names this one as init.source.
    for field in ('train_files', 'validation_files'):
      d[field] = ','.join(os.path.abspath(os.path.expanduser(p.strip()))
                          for p in d[field].split(',') if p.strip())
  if (d.corpus == 'files' or 'files' in mixed) and not t.name:
    for path in corpus_files(config, d.train_split):
      next(documents(path, d.text_key))
    for path in corpus_files(config, d.eval_split):
      for _ in documents(path, d.text_key):
        pass
  if t.name and not (t.dataset or t.train_file):  # before validate trips on the -1 fields
    raise ConfigError('task.train_file', t.train_file, 'your training file (.csv, .tsv or '
                      '.jsonl) with --config.task.train_file=..., or task.dataset (a TFDS name)')
  if not (t.name and t.train_file):
    return
  for field in ('train_file', 'validation_file', 'test_file'):
    if t[field]:
      t[field] = os.path.abspath(os.path.expanduser(t[field]))
  if t.name in ('classification', 'ner'):
    names = label_names(config)
    if t.name == 'classification' and len(names) < 2:
      raise UserError(f'{t.train_file}: every row has the label {names[0]!r}: a classifier '
                      'needs at least two classes (or list them in task.label_names)')
    config.model.num_classes = len(names)
    if t.name == 'classification' and t.format == 'text' and not t.label_words:
      if any(',' in n for n in names):
        raise UserError(f'{t.train_file}: a label contains a comma: set task.label_words '
                        '(one word per class, comma-separated)')
      config.task.label_words = ','.join(names)
  splits = ['train', 'validation'] + (['test'] if t.test_file else [])
  rows = {s: len(read_task_split(config, s)) for s in splits}
  tr = config.train
  # The generic configs leave these at -1: EPOCHS epochs of the train file, evaluated and
  # saved once per epoch (as task_configs.finish does for a known dataset size).
  if tr.steps == -1:
    tr.steps = max(1, math.ceil(EPOCHS * rows['train'] / tr.batch_size))
  per_epoch = max(1, tr.steps // EPOCHS)
  for group, field, value in [(tr, 'eval_every', per_epoch), (tr, 'checkpoint_every', per_epoch),
                              (tr, 'log_every', max(1, min(50, tr.steps // 10))),
                              (config.optim, 'warmup_steps', max(1, tr.steps // 10))]:
    if group[field] == -1:
      group[field] = value
