"""A linear probe on frozen features: one metric for models pretrained with any objective.

  probe = LinearProbe.from_texts(tokenizer, train_texts, train_labels, valid_texts, valid_labels,
                                 seq_len=64)
  components.extra_eval = probe.bind(config.model, objective=config.objective.name)
  components.eval_records = probe.records          # per validation example, after each call

Each call embeds the texts with the model's frozen weights (the mean of the final hidden
states over the real tokens: BERT's and T5's encoder, GPT's decoder stack; a GPT trained
with prefix LM reads the whole text as its prefix, bidirectionally, as it was trained to
read inputs), standardises the features with the training examples' mean and spread, and
fits multinomial logistic regression with scipy's L-BFGS (the solver and the objective
of scikit-learn's LogisticRegression): mean cross-entropy + l2 / 2 |W|^2, the bias
unpenalised, l2 chosen by 3-fold cross-validation on the training examples.  Validation
accuracy is comparable across objectives, unlike each objective's own loss, so a
comparison can watch it during pretraining (experiments/compare_objectives).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ptlm_jax import families
from ptlm_jax.finetune import features as features_lib

L2_GRID = (1e-3, 1e-2, 1e-1)  # mean-loss scale on standardised features
FOLDS = 3
BATCH = 256  # rows per feature batch: one compiled shape for every batch


def fit_logistic(x_NxD, y_N, l2: float, num_classes: int, weights_N=None, gtol: float = 1e-7):
  """(W DxC, b C) minimising sum_n w_n CE_n / sum(w) + l2 / 2 |W|^2 (the bias unpenalised).

  scikit-learn's LogisticRegression(C) minimises C sum_n CE_n + |W|^2 / 2, the same
  problem at l2 = 1 / (C N) for three or more classes; for two it fits one vector
  w = W[:, 1] - W[:, 0], the same problem at l2 = 2 / (C N) (tests/test_probe.py).
  """
  from scipy import optimize  # pylint: disable=g-import-not-at-top  (jax's own dependency)
  x_NxD = np.asarray(x_NxD, np.float64)
  n, d = x_NxD.shape
  w_N = np.ones(n) if weights_N is None else np.asarray(weights_N, np.float64)
  w_N = w_N / w_N.sum()
  y_NxC = np.eye(num_classes)[np.asarray(y_N, np.int64)]

  def loss_and_grad(theta):
    W_DxC, b_C = theta[:-num_classes].reshape(d, num_classes), theta[-num_classes:]
    logits_NxC = x_NxD @ W_DxC + b_C
    shifted_NxC = logits_NxC - logits_NxC.max(1, keepdims=True)
    log_p_NxC = shifted_NxC - np.log(np.exp(shifted_NxC).sum(1, keepdims=True))
    loss = -(w_N * (y_NxC * log_p_NxC).sum(1)).sum() + 0.5 * l2 * (W_DxC ** 2).sum()
    r_NxC = w_N[:, None] * (np.exp(log_p_NxC) - y_NxC)
    grad = np.concatenate([(x_NxD.T @ r_NxC + l2 * W_DxC).reshape(-1), r_NxC.sum(0)])
    return loss, grad

  theta = optimize.minimize(loss_and_grad, np.zeros(d * num_classes + num_classes), jac=True,
                            method='L-BFGS-B', options=dict(maxiter=1000, gtol=gtol)).x
  return theta[:-num_classes].reshape(d, num_classes), theta[-num_classes:]


@dataclasses.dataclass
class ProbeFit:
  W: np.ndarray           # D x C on standardised features
  b: np.ndarray           # C
  l2: float               # the strength cross-validation chose
  mean: np.ndarray        # D: the training features' mean and spread
  scale: np.ndarray

  def predict(self, x_NxD) -> np.ndarray:
    return (((x_NxD - self.mean) / self.scale) @ self.W + self.b).argmax(-1)


def fit_probe(x_NxD, y_N, num_classes: int, seed: int = 0) -> ProbeFit:
  """Standardise, choose l2 in L2_GRID by FOLDS-fold cross-validation, refit on all."""
  x_NxD = np.asarray(x_NxD, np.float64)
  y_N = np.asarray(y_N, np.int64)
  mean, scale = x_NxD.mean(0), x_NxD.std(0) + 1e-6
  z_NxD = (x_NxD - mean) / scale
  fold_N = np.random.default_rng(seed).permutation(len(y_N)) % FOLDS
  right = {}
  for l2 in L2_GRID:
    for k in range(FOLDS):
      W, b = fit_logistic(z_NxD, y_N, l2, num_classes, weights_N=(fold_N != k), gtol=1e-5)
      held = fold_N == k
      right[l2] = right.get(l2, 0) + int(((z_NxD[held] @ W + b).argmax(-1) == y_N[held]).sum())
  best = max(L2_GRID, key=lambda l2: (right[l2], l2))  # ties: the stronger penalty
  W, b = fit_logistic(z_NxD, y_N, best, num_classes)
  return ProbeFit(W, b, best, mean, scale)


def _rows(family: str, id_lists: Sequence[Sequence[int]], seq_len: int, vocab_info):
  rows = [features_lib.layout(family, ids, None, seq_len, vocab_info) for ids in id_lists]
  out = features_lib.row_features([r[0] for r in rows], [r[1] for r in rows], seq_len)
  pad = -len(out['tokens']) % BATCH
  return {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in out.items()}


def pooled_features_fn(model, family: str, prefix_lm: bool = False):
  """jit(params, rows) -> mean-pooled final hidden states B x D (float32) of `model`."""
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from ptlm_jax.models import heads

  def encode(module, tokens, segment_ids, positions, token_types):
    if families.get(family).decoder_only:
      prefix = (segment_ids != 0) if prefix_lm else None
      return module.encode(tokens, segment_ids, positions, prefix_mask=prefix, deterministic=True)
    return heads._encode(module, family, tokens, segment_ids, positions,  # pylint: disable=protected-access
                         token_types, True)

  @jax.jit
  def pooled(params, rows):
    h_BxLxD = model.apply({'params': params}, rows['tokens'], rows['segment_ids'],
                          rows['positions'], rows['token_types'], method=encode)
    return heads.mean_pool(h_BxLxD.astype(jnp.float32), rows['segment_ids'])
  return pooled


@dataclasses.dataclass
class LinearProbe:
  """Texts with labels, encoded once; `bind(model_config)` makes the loop's extra_eval."""
  train_ids: list[list[int]]
  train_labels: np.ndarray
  valid_ids: list[list[int]]
  valid_labels: np.ndarray
  num_classes: int
  seq_len: int
  vocab_info: Any
  last: dict = dataclasses.field(default_factory=dict)  # the latest fit and predictions
  _row_cache: dict = dataclasses.field(default_factory=dict)  # (family, split) -> padded rows

  @classmethod
  def from_texts(cls, tokenizer, train_texts, train_labels, valid_texts, valid_labels,
                 seq_len: int = 64, num_classes: int = 2) -> LinearProbe:
    return cls(tokenizer.encode_batch(list(train_texts)), np.asarray(train_labels, np.int64),
               tokenizer.encode_batch(list(valid_texts)), np.asarray(valid_labels, np.int64),
               num_classes, seq_len, tokenizer.vocab_info)

  def features(self, fn, family: str, params):
    """(train N x D, validation M x D) features of `params` by `fn` (pooled_features_fn)."""
    out = []
    for split, id_lists in (('train', self.train_ids), ('valid', self.valid_ids)):
      if (family, split) not in self._row_cache:
        self._row_cache[family, split] = _rows(family, id_lists, self.seq_len, self.vocab_info)
      rows = self._row_cache[family, split]
      got = [fn(params, {k: v[i:i + BATCH] for k, v in rows.items()})
             for i in range(0, len(rows['tokens']), BATCH)]  # dispatched, then fetched
      out.append(np.concatenate([np.asarray(g) for g in got])[:len(id_lists)])
    return out

  def bind(self, model_config, objective: str = ''):
    """extra_eval(params) -> {'probe_accuracy', 'probe_l2'} for a model of `model_config`."""
    from ptlm_jax import models  # pylint: disable=g-import-not-at-top
    # One traced and compiled function for every evaluation of the run.
    fn = pooled_features_fn(models.build_model(model_config), model_config.family,
                            prefix_lm=objective == 'prefix_lm')

    def extra_eval(params) -> dict[str, float]:
      x_train, x_valid = self.features(fn, model_config.family, params)
      fit = fit_probe(x_train, self.train_labels, self.num_classes)
      predicted = fit.predict(x_valid)
      self.last = dict(predicted=predicted, l2=fit.l2)
      return {'probe_accuracy': float((predicted == self.valid_labels).mean()),
              'probe_l2': fit.l2}
    return extra_eval

  def records(self) -> list[dict]:
    """One record per validation example of the latest extra_eval: label, prediction, correct."""
    predicted = self.last.get('predicted', [])
    return [{'label': int(y), 'predicted': int(p), 'correct': bool(p == y)}
            for y, p in zip(self.valid_labels, predicted)]
