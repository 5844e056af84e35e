"""The linear probe: the solver against scikit-learn, the features against the model itself."""
import jax
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from ptlm_jax import config_lib, models
from ptlm_jax.data import vocab
from ptlm_jax.finetune import probe


def _data(n=300, d=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x_NxD = rng.normal(size=(n, d))
  true_DxC = rng.normal(size=(d, classes))
  y_N = (x_NxD @ true_DxC + rng.gumbel(size=(n, classes))).argmax(-1)  # softmax sampling
  _data.bayes_N = (x_NxD @ true_DxC).argmax(-1)  # the Bayes-optimal guess
  return x_NxD, y_N


def _softmax(logits):
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_fit_logistic_equals_scikit_learn_multinomial():
  x, y = _data(classes=3)
  l2 = 0.05
  W, b = probe.fit_logistic(x, y, l2, 3)
  ref = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
  np.testing.assert_allclose(W, ref.coef_.T, atol=2e-4)
  np.testing.assert_allclose(_softmax(x @ W + b), ref.predict_proba(x), atol=2e-4)


def test_fit_logistic_equals_scikit_learn_binary():
  x, y = _data(classes=2, seed=1)
  l2 = 0.02
  W, b = probe.fit_logistic(x, y, l2, 2)
  ref = LogisticRegression(C=2 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
  np.testing.assert_allclose(W[:, 1] - W[:, 0], ref.coef_[0], atol=2e-4)
  np.testing.assert_allclose(b[1] - b[0], ref.intercept_[0], atol=2e-4)


def test_weights_zero_leave_examples_out():
  x, y = _data(classes=3, seed=2)
  keep = np.arange(len(y)) % 3 != 0
  W_w, b_w = probe.fit_logistic(x, y, 0.01, 3, weights_N=keep)
  W_s, b_s = probe.fit_logistic(x[keep], y[keep], 0.01, 3)
  np.testing.assert_allclose(W_w, W_s, atol=1e-4)
  np.testing.assert_allclose(_softmax(x @ W_w + b_w), _softmax(x @ W_s + b_s), atol=1e-4)


def test_fit_probe_ignores_feature_scale_and_learns_a_linear_rule():
  x, y = _data(n=800, d=5, classes=2, seed=3)
  scaled = x * np.array([1000.0, 1e-3, 1.0, 5.0, 0.1])
  a, b = probe.fit_probe(x[:600], y[:600], 2), probe.fit_probe(scaled[:600], y[:600], 2)
  assert a.l2 == b.l2
  np.testing.assert_array_equal(a.predict(x[600:]), b.predict(scaled[600:]))
  # Labels sampled from a softmax of a linear rule: the probe finds the rule (its decision
  # agrees with the Bayes guess on held-out points far more often than chance's 0.5).
  assert (a.predict(x[600:]) == _data.bayes_N[600:]).mean() > 0.9


class _Ids:
  """A tokenizer stand-in: one id per word, ids from 10 (below: the specials)."""
  vocab_info = vocab.VocabInfo(0)

  def encode_batch(self, texts):
    return [[10 + int(w) for w in t.split()] for t in texts]


@pytest.mark.parametrize('family', ['bert', 'gpt', 't5'])
def test_pooled_features_are_the_mean_of_the_models_own_hidden_states(family):
  c = config_lib.base_config(family, 'tiny')
  c.model.vocab_size = 64
  model = models.build_model(c.model)
  ids = [[1, 2, 3], [4, 5, 6, 7, 8], [9]]
  rows = probe._rows(family, [[10 + i for i in r] for r in ids], 16, vocab.VocabInfo(0))
  batch = {k: v[:3] for k, v in rows.items()}
  init_args = ((batch['tokens'], batch['segment_ids'], batch['positions'], batch['tokens'][:, :4],
                batch['segment_ids'][:, :4], batch['positions'][:, :4]) if family == 't5' else
               (batch['tokens'], batch['segment_ids'], batch['positions']))
  params = model.init(jax.random.PRNGKey(0), *init_args)['params']
  got = np.asarray(probe.pooled_features_fn(model, family)(params, rows))[:3]
  encode = lambda m: (m.encode(batch['tokens'], batch['segment_ids'], batch['positions'])
                      if family != 'bert' else
                      m.encode(batch['tokens'], batch['segment_ids'], batch['positions'],
                               batch['token_types']))
  h = np.asarray(model.apply({'params': params}, method=encode), np.float64)
  for i, r in enumerate(ids):
    real = batch['segment_ids'][i] != 0
    assert real.sum() == len(r) + (2 if family == 'bert' else 1)  # [CLS] .. [SEP] / EOS
    np.testing.assert_allclose(got[i], h[i][real].mean(0), rtol=1e-4, atol=1e-5)
  if family == 'gpt':  # prefix LM reads the text bidirectionally: other features
    bidirectional = np.asarray(probe.pooled_features_fn(model, family, True)(params, rows))[:3]
    assert np.abs(bidirectional[1] - got[1]).max() > 1e-3


def test_probe_reads_a_word_rule_through_random_frozen_features():
  rng = np.random.default_rng(0)
  texts = [' '.join(str(w) for w in rng.integers(0, 40, size=8)) for _ in range(600)]
  labels = [int('7' in t.split()) for t in texts]
  c = config_lib.base_config('bert', 'tiny')
  c.model.vocab_size = 64
  model = models.build_model(c.model)
  lp = probe.LinearProbe.from_texts(_Ids(), texts[:400], labels[:400], texts[400:], labels[400:],
                                    seq_len=16)
  rows = probe._rows('bert', lp.train_ids[:2], 16, lp.vocab_info)
  params = model.init(jax.random.PRNGKey(0), rows['tokens'][:2], rows['segment_ids'][:2],
                      rows['positions'][:2])['params']
  scores = lp.bind(c.model, 'mlm')(params)
  records = lp.records()
  assert len(records) == 200
  assert scores['probe_accuracy'] == np.mean([r['correct'] for r in records])
  assert [r['label'] for r in records] == labels[400:]
  # The word's presence is a linear function of mean-pooled token features: well above the
  # majority class (~0.8 of texts lack word 7).
  majority = max(np.mean(labels[400:]), 1 - np.mean(labels[400:]))
  assert scores['probe_accuracy'] > majority + 0.05
