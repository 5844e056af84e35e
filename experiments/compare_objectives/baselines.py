"""Baselines that need no pretraining, on the same examples as the fine-tuned models.

  majority_class(train_labels, n)               # per-example correctness on n examples
  fit_bag_of_words(train_texts, train_labels)   # -> BagOfWords; .predict(texts)
  tag_lexicon(train_words, train_tags)          # NER: each word form's most frequent tag

The bag-of-words classifier is L2-regularised logistic regression (softmax over the
classes) on binary word-presence features, fitted with optax's L-BFGS on the full batch
(a convex problem: it converges to the one optimum, so there is no recipe to tune).
A text is the list of its distinct word ids, so a logit is a sum of gathered weights:
the features stay sparse (~20 of ~19,000 words per snippet) and a fit takes seconds.  The
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


_FITS = {}  # (classes, steps) -> the jitted, vmapped fit


def _fitter(num_classes: int, steps: int):
  """fit(ids NxL, y N, weights MxN, l2 M, W0 VxC) -> (W MxVxC, b MxC): M fits, one compile."""
  # pylint: disable=g-import-not-at-top  (jax only when a baseline is fitted)
  import jax
  import jax.numpy as jnp
  import optax
  if (num_classes, steps) in _FITS:
    return _FITS[num_classes, steps]

  def fit(ids_NxL, y_N, w_N, l2, zeros_VxC):
    def loss(params):
      padded_WxC = jnp.concatenate([params['W'], jnp.zeros((1, num_classes))])  # row V: no word
      logits_NxC = padded_WxC[ids_NxL].sum(axis=1) + params['b']
      ce_N = optax.softmax_cross_entropy_with_integer_labels(logits_NxC, y_N)
      return jnp.sum(w_N * ce_N) / jnp.sum(w_N) + 0.5 * l2 * jnp.sum(params['W'] ** 2)

    params = {'W': zeros_VxC, 'b': jnp.zeros(num_classes)}
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
      params, state = carry
      value, grad = value_and_grad(params, state=state)
      updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params['W'], params['b']

  _FITS[num_classes, steps] = jax.jit(jax.vmap(fit, in_axes=(None, None, 0, 0, None)))
  return _FITS[num_classes, steps]


def fit_logistic(ids_NxL, vocab_size: int, y_N, weights_MxN, l2_M, num_classes: int,
                 steps: int = 100):
  """M fits of (W VxC, b C) minimising the weighted mean cross-entropy + l2 / 2 |W|^2.

  ids_NxL: each example's distinct feature ids (`word_ids`), padded with vocab_size.
  """
  W, b = _fitter(num_classes, steps)(
      np.asarray(ids_NxL, np.int32), np.asarray(y_N, np.int32),
      np.asarray(weights_MxN, np.float32), np.asarray(l2_M, np.float32),
      np.zeros((vocab_size, num_classes), np.float32))
  return np.asarray(W), np.asarray(b)


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
  # Held-out folds get weight 0, so every fit has the same shapes (one vmapped compile).
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

