"""Task metrics on host-side predictions: classification, NER, SQuAD, ROUGE and BLEU.

Plain functions of predictions and references (Python lists / numpy), reported x100 where
the field usually does (SQuAD, ROUGE, BLEU) and as fractions otherwise:

  task_metrics.classification([1, 0, 1], [1, 1, 1])          # accuracy, f1 (binary)
  task_metrics.entity_f1([['B-PER', 'I-PER', 'O']], [['B-PER', 'O', 'O']])
  task_metrics.squad(['Denver Broncos'], [['Denver Broncos', 'The Broncos']])
  task_metrics.rouge(['the cat sat'], ['the cat sat down'])     # rouge1, rouge2, rougeL
  task_metrics.bleu(['the cat sat'], ['the cat sat down'])      # corpus BLEU

Where a well-kept library defines the metric it is used: ROUGE is Google's `rouge-score`
(the reference re-implementation of ROUGE-1.5.5; Porter stemming on), BLEU is `sacrebleu`
(corpus BLEU, 13a tokenisation, exp smoothing).  Entity F1 follows `seqeval`'s default
(conlleval) semantics for IOB2 tags, written out here because seqeval pulls in
scikit-learn and has not had a release since 2020; the SQuAD scores follow the official
v1.1 evaluation script (lower case, punctuation and articles a/an/the removed, whitespace
collapsed; the best score over the reference answers).
"""
from __future__ import annotations

import collections
import re
import string
from typing import Sequence

import numpy as np

from ptlm_jax.errors import UserError


# ---------------------------------------------------------------------------
# Classification.

def classification(predictions: Sequence[int], labels: Sequence[int], num_classes: int = 2,
                   average: str = 'auto') -> dict[str, float]:
  """accuracy, and F1: binary (class 1 positive) for two classes, else macro over classes.

  `average` = auto | binary | macro.  Macro F1 is the unweighted mean of the per-class F1
  over all `num_classes` classes (a class never predicted nor present scores 0, as
  scikit-learn's `f1_score(average='macro', labels=range(C), zero_division=0)`).
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape:
    raise ValueError(f'{predictions.shape} predictions for {labels.shape} labels')
  if average == 'auto':
    average = 'binary' if num_classes == 2 else 'macro'
  out = {'accuracy': float(np.mean(predictions == labels)) if labels.size else 0.0}
  if average == 'binary':
    out['f1'] = _f1(predictions == 1, labels == 1)
  elif average == 'macro':
    out['macro_f1'] = float(np.mean([_f1(predictions == c, labels == c)
                                     for c in range(num_classes)]))
  else:
    raise ValueError(f'average={average!r}: expected auto, binary or macro')
  return out


def _f1(predicted: np.ndarray, actual: np.ndarray) -> float:
  true_positives = float(np.sum(predicted & actual))
  denominator = float(np.sum(predicted) + np.sum(actual))
  return 2 * true_positives / denominator if denominator else 0.0


# ---------------------------------------------------------------------------
# Named entities (IOB2).

def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
  """The (type, first, last) entity chunks of one IOB2 sentence, seqeval's default way.

  A chunk starts at B-X, or at I-X after O or after a chunk of another type (conlleval
  treats such a stray I- as a beginning); it ends before O, B-, or a change of type.
  """
  spans, start, kind = set(), None, None
  for i, tag in enumerate(list(tags) + ['O']):
    prefix, _, this_kind = tag.partition('-')
    if prefix not in ('B', 'I', 'O') or (prefix != 'O') != bool(this_kind):
      raise ValueError(f'tag {tag!r} is not IOB2 (O, B-<type>, I-<type>)')
    continues = prefix == 'I' and this_kind == kind
    if start is not None and not continues:
      spans.add((kind, start, i - 1))
      start, kind = None, None
    if prefix == 'B' or (prefix == 'I' and not continues):
      start, kind = i, this_kind
  return spans


def entity_f1(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
              ) -> dict[str, float]:
  """Micro precision, recall and F1 over exact entity chunks (type and both ends)."""
  if len(true_tags) != len(pred_tags):
    raise ValueError(f'{len(pred_tags)} predicted sentences for {len(true_tags)} true ones')
  correct = n_pred = n_true = 0
  for true, pred in zip(true_tags, pred_tags):
    if len(true) != len(pred):
      raise ValueError(f'sentence of {len(true)} tags predicted with {len(pred)}')
    t, p = entity_spans(true), entity_spans(pred)
    correct, n_pred, n_true = correct + len(t & p), n_pred + len(p), n_true + len(t)
  precision = correct / n_pred if n_pred else 0.0
  recall = correct / n_true if n_true else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {'precision': precision, 'recall': recall, 'entity_f1': f1}


# ---------------------------------------------------------------------------
# SQuAD (the official v1.1 evaluation, scores x100).

def normalize_answer(text: str) -> str:
  """Lower case; drop punctuation and the articles a, an, the; collapse whitespace."""
  text = text.lower()
  text = ''.join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r'\b(a|an|the)\b', ' ', text)
  return ' '.join(text.split())


def _token_f1(prediction: str, reference: str) -> float:
  pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
  common = collections.Counter(pred) & collections.Counter(ref)
  same = sum(common.values())
  if same == 0:
    return 0.0
  precision, recall = same / len(pred), same / len(ref)
  return 2 * precision * recall / (precision + recall)


def squad(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
  """exact_match and f1 (x100), each the best over an example's reference answers."""
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions for {len(references)} examples')
  em = f1 = 0.0
  for prediction, answers in zip(predictions, references):
    em += max(float(normalize_answer(prediction) == normalize_answer(a)) for a in answers)
    f1 += max(_token_f1(prediction, a) for a in answers)
  n = max(len(predictions), 1)
  return {'exact_match': 100.0 * em / n, 'f1': 100.0 * f1 / n}


# ---------------------------------------------------------------------------
# Generation: ROUGE and BLEU through their reference libraries.

def _require(module: str, package: str):
  try:
    return __import__(module, fromlist=['_'])
  except ImportError as e:
    raise UserError(f'the {package!r} package is needed for this metric: pip install '
                    f'{package} (it is in setup.py install_requires)') from e


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1, ROUGE-2 and ROUGE-L F-measures (x100), Porter stemming on."""
  rouge_scorer = _require('rouge_score.rouge_scorer', 'rouge-score')
  scorer = rouge_scorer.RougeScorer(['rouge1', 'rouge2', 'rougeL'], use_stemmer=True)
  totals = collections.Counter()
  for prediction, reference in zip(predictions, references, strict=True):
    for name, score in scorer.score(reference, prediction).items():
      totals[name] += score.fmeasure
  n = max(len(predictions), 1)
  return {name: 100.0 * totals[name] / n for name in ('rouge1', 'rouge2', 'rougeL')}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
  """Corpus BLEU (sacrebleu defaults: 13a tokenisation, exp smoothing), one reference each."""
  sacrebleu = _require('sacrebleu', 'sacrebleu')
  if len(predictions) != len(references):
    raise ValueError(f'{len(predictions)} predictions for {len(references)} references')
  return {'bleu': float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)}
