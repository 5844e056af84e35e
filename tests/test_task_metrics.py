"""Task metrics against values computed by hand on tiny examples."""
import math

import numpy as np
import pytest

from ptlm_jax.finetune import metrics as task_metrics


def test_accuracy_and_binary_f1_by_hand():
  # predictions 1 1 0 1 0, labels 1 0 0 1 1: TP 2, FP 1, FN 1 -> F1 = 2*2 / (3 + 3).
  scores = task_metrics.classification([1, 1, 0, 1, 0], [1, 0, 0, 1, 1])
  assert scores['accuracy'] == pytest.approx(3 / 5)
  assert scores['f1'] == pytest.approx(4 / 6)


def test_macro_f1_by_hand_counts_an_absent_class_as_zero():
  # class 0: TP 1, predicted 2, true 1 -> 2/3; class 1: TP 1, predicted 1, true 2 -> 2/3;
  # class 2: never predicted nor present -> 0.
  predictions, labels = [0, 0, 1], [0, 1, 1]
  scores = task_metrics.classification(predictions, labels, num_classes=3)
  assert scores['accuracy'] == pytest.approx(2 / 3)
  assert scores['macro_f1'] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_entity_spans_follow_conlleval():
  tags = ['B-PER', 'I-PER', 'O', 'I-LOC', 'I-LOC', 'B-LOC', 'I-PER', 'B-PER']
  # A stray I- starts an entity; a type change ends one; B- after B- starts a new one.
  assert task_metrics.entity_spans(tags) == {('PER', 0, 1), ('LOC', 3, 4), ('LOC', 5, 5),
                                             ('PER', 6, 6), ('PER', 7, 7)}
  with pytest.raises(ValueError, match='not IOB2'):
    task_metrics.entity_spans(['B-PER', 'X'])


def test_entity_f1_by_hand():
  true = [['B-PER', 'I-PER', 'O', 'B-LOC'], ['O', 'B-LOC', 'O']]
  pred = [['B-PER', 'O', 'O', 'B-LOC'], ['O', 'B-LOC', 'B-PER']]
  # True chunks: PER 0-1, LOC 3, LOC 1 (3); predicted: PER 0, LOC 3, LOC 1, PER 2 (4);
  # correct: LOC 3, LOC 1 (2).  P = 2/4, R = 2/3, F1 = 2PR / (P + R) = 4/7.
  scores = task_metrics.entity_f1(true, pred)
  assert scores['precision'] == pytest.approx(0.5)
  assert scores['recall'] == pytest.approx(2 / 3)
  assert scores['entity_f1'] == pytest.approx(4 / 7)


def test_entity_f1_agrees_with_seqeval_on_random_sequences():
  seqeval = pytest.importorskip('seqeval.metrics')  # an optional cross-check
  rng = np.random.default_rng(0)
  tags = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC']
  true = [[tags[i] for i in rng.integers(0, 5, rng.integers(1, 12))] for _ in range(200)]
  pred = [[t if rng.random() < 0.7 else tags[rng.integers(0, 5)] for t in s] for s in true]
  scores = task_metrics.entity_f1(true, pred)
  assert scores['entity_f1'] == pytest.approx(seqeval.f1_score(true, pred))
  assert scores['precision'] == pytest.approx(seqeval.precision_score(true, pred))


def test_squad_normalisation_and_scores_by_hand():
  assert task_metrics.normalize_answer('The  Denver Broncos!') == 'denver broncos'
  # Example 1 matches its second answer exactly; example 2: prediction 'the big cat sat'
  # -> 'big cat sat', reference 'a cat' -> 'cat': 1 common, P = 1/3, R = 1 -> F1 = 1/2.
  scores = task_metrics.squad(['Broncos', 'the big cat sat'],
                              [['Denver Broncos', 'broncos.'], ['a cat']])
  assert scores['exact_match'] == pytest.approx(50.0)
  assert scores['f1'] == pytest.approx(100 * (1 + 0.5) / 2)


def test_rouge_by_hand():
  pytest.importorskip('rouge_score')
  # 'the cat sat on the mat' vs 'the cat is on the mat': unigrams 5 of 6 shared,
  # bigrams 3 of 5 (the cat, on the, the mat), LCS 5 (the cat on the mat).
  scores = task_metrics.rouge(['the cat sat on the mat'], ['the cat is on the mat'])
  assert scores['rouge1'] == pytest.approx(100 * 5 / 6)
  assert scores['rouge2'] == pytest.approx(100 * 3 / 5)
  assert scores['rougeL'] == pytest.approx(100 * 5 / 6)
  # Porter stemming: 'cats' matches 'cat'.
  assert task_metrics.rouge(['cats'], ['cat'])['rouge1'] == pytest.approx(100.0)


def test_bleu_by_hand():
  pytest.importorskip('sacrebleu')
  # 'the cat sat on the mat' vs 'the cat sat on a mat': clipped n-gram precisions
  # 5/6, 3/5, 2/4, 1/3, equal lengths (no brevity penalty).
  expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
  scores = task_metrics.bleu(['the cat sat on the mat'], ['the cat sat on a mat'])
  assert scores['bleu'] == pytest.approx(expected, abs=0.01)
  assert task_metrics.bleu(['a b c d e'], ['a b c d e'])['bleu'] == pytest.approx(100.0)
