"""The comparison's baselines: majority class, bag-of-words logistic regression, NER lexicon."""
import numpy as np
import pytest

from experiments.compare_objectives import baselines


def _toy(n, seed):
  """Texts of 6 words; the label is whether 'good' outnumbers 'bad', with 10% flipped."""
  rng = np.random.default_rng(seed)
  vocab = ['good', 'bad', 'film', 'the', 'plot', 'actor', "isn't", 'a', 'b', 'c']
  texts, labels = [], []
  for _ in range(n):
    ws = rng.choice(vocab, size=6)
    y = int((ws == 'good').sum() > (ws == 'bad').sum())
    labels.append(y if rng.random() > 0.1 else 1 - y)
    texts.append(' '.join(ws).upper() if rng.random() < 0.2 else ' '.join(ws))
  return texts, np.array(labels)


def test_words_and_presence():
  assert baselines.words("It ISN'T a film, it's 2 films!") == [
      'it', "isn't", 'a', 'film', "it's", '2', 'films']
  x = baselines.presence(['a b a', 'c'], {'a': 0, 'c': 1})
  np.testing.assert_array_equal(x, [[1, 0], [0, 1]])
  # Distinct ids per text, padded with the vocabulary size (2 here).
  np.testing.assert_array_equal(baselines.word_ids(['c a b a', 'b'], {'a': 0, 'c': 1}),
                                [[0, 1], [2, 2]])


def test_majority_class():
  np.testing.assert_array_equal(baselines.majority_class([1, 1, 0], [0, 1, 1, 0]),
                                [False, True, True, False])


def test_logistic_regression_matches_scikit_learn():
  linear_model = pytest.importorskip('sklearn.linear_model')
  texts, y = _toy(300, seed=0)
  vocabulary = {w: i for i, w in enumerate(sorted({w for t in texts for w in baselines.words(t)}))}
  x = baselines.presence(texts, vocabulary)
  l2 = 1e-2
  W, b = baselines.fit_logistic(baselines.word_ids(texts, vocabulary), len(vocabulary), y,
                                np.ones((1, len(y))), [l2], num_classes=2)
  # Softmax over 2 classes with l2 / 2 (|W0|^2 + |W1|^2) on the mean loss is binary logistic
  # regression with w = W1 - W0 and penalty l2 / 4 |w|^2, i.e. scikit-learn's C = 2 / (l2 N).
  ref = linear_model.LogisticRegression(C=2 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(x, y)
  np.testing.assert_allclose(W[0][:, 1] - W[0][:, 0], ref.coef_[0], atol=2e-3)
  assert b[0][1] - b[0][0] == pytest.approx(ref.intercept_[0], abs=2e-3)


def test_bag_of_words_learns_the_rule_and_cross_validates():
  texts, y = _toy(400, seed=1)
  model = baselines.fit_bag_of_words(texts, y)
  assert set(model.cv_accuracy) == set(baselines.L2_GRID)
  assert model.l2 in baselines.L2_GRID
  test_texts, test_y = _toy(400, seed=2)
  accuracy = np.mean(model.predict(test_texts) == test_y)
  # The rule is learnable up to its 10% label noise; chance is about 0.6 (more 0 labels).
  assert accuracy > 0.8


def test_tag_lexicon():
  tag = baselines.tag_lexicon([['Romeo', 'speaks'], ['Romeo', 'Verona'], ['Romeo', 'x']],
                              [['B-PER', 'O'], ['B-PER', 'B-LOC'], ['O', 'O']])
  assert tag(['Romeo', 'in', 'Verona']) == ['B-PER', 'O', 'B-LOC']
