"""Baselines that need no pretraining, on the same examples as the fine-tuned models.

  majority_class(train_labels, n)               # per-example correctness on n examples
  fit_bag_of_words(train_texts, train_labels)   # -> BagOfWords; .predict(texts)
  tag_lexicon(train_words, train_tags)          # NER: each word form's most frequent tag

The bag-of-words classifier is L2-regularised logistic regression (softmax over the
classes) on binary word-presence features, fitted with scipy's L-BFGS-B on the full
batch, the solver scikit-learn uses (a convex problem: it converges to the one optimum,
so there is no recipe to tune).  The features stay sparse (~20 of ~19,000 words per
snippet, a scipy CSR matrix), so a fit takes a fraction of a second.  The
L2 strength is chosen among a few values by 4-fold cross-validation on the training
examples alone; the validation split is never seen.  Words are lower-cased runs of
letters, digits and apostrophes; the vocabulary is every word of the training examples.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Callable

import numpy as np

_WORD = re.compile(r"[a-z0-9']+")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)   # penalty on the mean loss: lambda / 2 x |W|^2
FOLDS = 4


def words(text: str) -> list[str]:
  return _WORD.findall(text.lower())


def majority_class(train_labels, labels) -> np.ndarray:
  """Per-example correctness of always answering the training split's most frequent class."""
  majority = collections.Counter(int(y) for y in train_labels).most_common(1)[0][0]
  return np.asarray(labels) == majority


def word_ids(texts, vocabulary: dict[str, int]) -> np.ndarray:
  """N x L distinct vocabulary ids of each text, padded with len(vocabulary) (no word)."""
  rows = [sorted({vocabulary[w] for w in words(t) if w in vocabulary}) for t in texts]
  ids_NxL = np.full((len(rows), max([len(r) for r in rows] + [1])), len(vocabulary), np.int32)
  for i, r in enumerate(rows):
    ids_NxL[i, :len(r)] = r
  return ids_NxL


def presence(texts, vocabulary: dict[str, int]) -> np.ndarray:
  """N x V binary features: whether each vocabulary word occurs in each text."""
  x_NxV = np.zeros((len(texts), len(vocabulary)), np.float32)
  for i, text in enumerate(texts):
    for w in words(text):
      j = vocabulary.get(w)
      if j is not None:
        x_NxV[i, j] = 1.0
  return x_NxV


def _sparse_presence(ids_NxL, vocab_size: int):
  """The N x V presence matrix (scipy CSR) of `word_ids` rows (the pad id dropped)."""
  from scipy import sparse  # pylint: disable=g-import-not-at-top  (jax's own dependency)
  ids_NxL = np.asarray(ids_NxL)
  rows_NxL = np.broadcast_to(np.arange(len(ids_NxL))[:, None], ids_NxL.shape)
  real = ids_NxL < vocab_size
  return sparse.csr_matrix((np.ones(real.sum()), (rows_NxL[real], ids_NxL[real])),
                           shape=(len(ids_NxL), vocab_size))


def fit_logistic(ids_NxL, vocab_size: int, y_N, weights_MxN, l2_M, num_classes: int):
  """M fits of (W VxC, b C) minimising the weighted mean cross-entropy + l2 / 2 |W|^2.

  ids_NxL: each example's distinct feature ids (`word_ids`), padded with vocab_size.
  scipy's L-BFGS-B (the solver scikit-learn's LogisticRegression uses) on the sparse
  presence matrix, with the exact gradient: X^T (p - Y) w / sum(w) + l2 W.
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  x_NxV = _sparse_presence(ids_NxL, vocab_size)
  xt_VxN = x_NxV.T.tocsr()
  y_NxC = np.eye(num_classes)[np.asarray(y_N, np.int64)]
  out_W, out_b = [], []
  for w_N, l2 in zip(np.asarray(weights_MxN, np.float64), np.asarray(l2_M, np.float64)):
    w_N = w_N / w_N.sum()

    def loss_and_grad(theta, w_N=w_N, l2=l2):
      W_VxC, b_C = theta[:-num_classes].reshape(vocab_size, num_classes), theta[-num_classes:]
      logits_NxC = x_NxV @ W_VxC + b_C
      shifted_NxC = logits_NxC - logits_NxC.max(1, keepdims=True)
      log_p_NxC = shifted_NxC - np.log(np.exp(shifted_NxC).sum(1, keepdims=True))
      loss = -(w_N * (y_NxC * log_p_NxC).sum(1)).sum() + 0.5 * l2 * (W_VxC ** 2).sum()
      r_NxC = w_N[:, None] * (np.exp(log_p_NxC) - y_NxC)
      grad = np.concatenate([(xt_VxN @ r_NxC + l2 * W_VxC).reshape(-1), r_NxC.sum(0)])
      return loss, grad

    theta = optimize.minimize(loss_and_grad, np.zeros(vocab_size * num_classes + num_classes),
                              jac=True, method='L-BFGS-B',
                              options=dict(maxiter=2000, gtol=1e-8, ftol=1e-12)).x
    out_W.append(theta[:-num_classes].reshape(vocab_size, num_classes))
    out_b.append(theta[-num_classes:])
  return np.stack(out_W).astype(np.float32), np.stack(out_b).astype(np.float32)


@dataclasses.dataclass
class BagOfWords:
  vocabulary: dict[str, int]
  W: np.ndarray          # V x C
  b: np.ndarray          # C
  l2: float              # the strength cross-validation chose
  cv_accuracy: dict      # {l2: accuracy over the held-out folds}

  def predict(self, texts) -> np.ndarray:
    return _logits(word_ids(texts, self.vocabulary), self.W, self.b).argmax(-1)


def _logits(ids_NxL, W_VxC, b_C) -> np.ndarray:
  padded = np.concatenate([W_VxC, np.zeros((1, W_VxC.shape[1]), W_VxC.dtype)])
  return padded[ids_NxL].sum(axis=1) + b_C


def fit_bag_of_words(train_texts, train_labels, num_classes: int = 2, seed: int = 0) -> BagOfWords:
  """Logistic regression on word presence; L2 by 4-fold cross-validation (module docstring)."""
  vocabulary = {}
  for text in train_texts:
    for w in words(text):
      vocabulary.setdefault(w, len(vocabulary))
  ids_NxL, v = word_ids(train_texts, vocabulary), len(vocabulary)
  y_N = np.asarray(train_labels, np.int32)
  n = len(y_N)
  fold_N = np.random.default_rng(seed).permutation(n) % FOLDS
  # Held-out folds get weight 0: every fit sees the same matrix.
  grid = [(l2, k) for l2 in L2_GRID for k in range(FOLDS)]
  weights_MxN = np.stack([(fold_N != k).astype(np.float32) for _, k in grid])
  W_MxVxC, b_MxC = fit_logistic(ids_NxL, v, y_N, weights_MxN, [l2 for l2, _ in grid], num_classes)
  cv = {}
  for m, (l2, k) in enumerate(grid):
    held = fold_N == k
    right = (_logits(ids_NxL[held], W_MxVxC[m], b_MxC[m]).argmax(-1) == y_N[held]).sum()
    cv[l2] = cv.get(l2, 0) + int(right)
  cv = {l2: right / n for l2, right in cv.items()}
  best = max(L2_GRID, key=lambda l2: (cv[l2], l2))  # ties: the stronger penalty
  W_1xVxC, b_1xC = fit_logistic(ids_NxL, v, y_N, np.ones((1, n), np.float32), [best], num_classes)
  return BagOfWords(vocabulary, W_1xVxC[0], b_1xC[0], best, cv)


def tag_lexicon(train_words, train_tags) -> Callable:
  """NER baseline: each word form's most frequent training tag (unseen words: 'O')."""
  counts = collections.defaultdict(collections.Counter)
  for sentence, tags in zip(train_words, train_tags):
    for w, t in zip(sentence, tags):
      counts[w][t] += 1
  best = {w: c.most_common(1)[0][0] for w, c in counts.items()}
  return lambda sentence: [best.get(w, 'O') for w in sentence]

