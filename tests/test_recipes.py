"""The `base` configs against the papers' pretraining recipes: a table per family, each
value with its source; a config that drifts fails here.

Sources:
  [BERT]   Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for
           Language Understanding": sec. 3.1 (15% masked, 80/10/10), appendix A.2 (batch
           256, 1M steps, Adam lr 1e-4, beta1 0.9, beta2 0.999, L2 weight decay 0.01,
           10,000 warm-up steps, linear decay; 90% of steps at length 128, the rest 512).
  [BERT-code] google-research/bert: optimization.py (AdamWeightDecayOptimizer eps 1e-6);
           README / create_pretraining_data.py: max_predictions_per_seq ~ max_seq_length x
           masked_lm_prob, 20 at 128 and 80 at 512 in the released runs.
  [GPT-2]  Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
           sec. 2.3: context 1024 tokens, batch 512.
  [GPT-3]  Brown et al. 2020, appendix B (GPT-2 gives no optimizer settings): Adam(W)
           beta1 0.9, beta2 0.95, eps 1e-8, cosine decay.
  [T5]     Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
           Text-to-Text Transformer": sec. 3.1.2 (2^19 steps, batch 128, length 512,
           Adafactor, lr 1/sqrt(max(n, k)) with k = 10^4: 0.01 held for 10^4 steps);
           sec. 3.1.4 (15% noise, mean span 3).
  [T5-code] google-research/text-to-text-transfer-transformer, t5/data/preprocessors.py:
           `span_corruption` = reduce_concat_tokens + split_tokens (chunks of the
           concatenated stream, no document boundaries), `random_spans_noise_mask` without
           random_roll, `random_spans_helper`: 512 inputs <- 568 raw tokens, 114 targets.
"""
import jax
import numpy as np
import pytest

from configs import bert as bert_configs
from configs import gpt as gpt_configs
from configs import t5 as t5_configs
from ptlm_jax import config_lib, objectives
from ptlm_jax.data import vocab
from ptlm_jax.training import optim

# (field, paper value, source)
BERT = [
    ('objective.name', 'mlm', 'BERT 3.1'),
    ('objective.mask_rate', 0.15, 'BERT 3.1'),
    ('objective.mask_token_rate', 0.8, 'BERT 3.1'),
    ('objective.random_token_rate', 0.1, 'BERT 3.1'),
    ('objective.mask_count_mode', 'fixed', 'BERT-code create_pretraining_data.py'),
    ('data.seq_len', 512, 'BERT A.2 (the length of the last 10% of steps)'),
    ('optim.optimizer', 'adamw', 'BERT A.2 (Adam with decoupled L2 decay)'),
    ('optim.lr', 1e-4, 'BERT A.2'),
    ('optim.b1', 0.9, 'BERT A.2'),
    ('optim.b2', 0.999, 'BERT A.2'),
    ('optim.eps', 1e-6, 'BERT-code optimization.py'),
    ('optim.weight_decay', 0.01, 'BERT A.2'),
    ('optim.warmup_steps', 10_000, 'BERT A.2'),
    ('optim.decay', 'linear', 'BERT A.2'),
    ('optim.final_lr_frac', 0.0, 'BERT A.2 (linear decay to 0)'),
    ('train.steps', 1_000_000, 'BERT A.2'),
    ('train.batch_size', 256, 'BERT A.2'),
]
GPT2 = [
    ('objective.name', 'causal_lm', 'GPT-2 2.1'),
    ('data.seq_len', 1024, 'GPT-2 2.3'),
    ('model.max_len', 1024, 'GPT-2 2.3'),
    ('train.batch_size', 512, 'GPT-2 2.3'),
    ('optim.optimizer', 'adamw', 'GPT-3 B'),
    ('optim.decay', 'cosine', 'GPT-3 B'),
    ('optim.b1', 0.9, 'GPT-3 B'),
    ('optim.b2', 0.95, 'GPT-3 B'),
    ('optim.eps', 1e-8, 'GPT-3 B'),
]
T5 = [
    ('objective.name', 'span_corruption', 'T5 3.1.4'),
    ('objective.noise_density', 0.15, 'T5 3.1.4'),
    ('objective.mean_span_length', 3.0, 'T5 3.1.4'),
    ('objective.random_roll', False, 'T5-code span_corruption (no random_roll)'),
    ('data.pack_mode', 'chunk', 'T5-code reduce_concat_tokens + split_tokens'),
    ('data.seq_len', 512, 'T5 3.1.2'),
    ('optim.optimizer', 'adafactor', 'T5 3.1.2'),
    ('optim.lr', 1e-2, 'T5 3.1.2'),
    ('optim.decay', 'rsqrt', 'T5 3.1.2'),
    ('optim.warmup_steps', 10_000, 'T5 3.1.2 (k = 10^4)'),
    ('optim.weight_decay', 0.0, 'T5 3.1.2 (none)'),
    ('train.steps', 2**19, 'T5 3.1.2'),
    ('train.batch_size', 128, 'T5 3.1.2'),
]
TABLES = {'bert': (bert_configs, BERT), 'gpt': (gpt_configs, GPT2), 't5': (t5_configs, T5)}


def _get(config, field):
  group, name = field.split('.')
  return config[group][name]


@pytest.mark.parametrize('family, field, expected, source',
                         [(f, *row) for f, (_, table) in TABLES.items() for row in table])
def test_base_config_follows_the_paper(family, field, expected, source):
  config = TABLES[family][0].get_config('base')
  assert _get(config, field) == expected, f'{family} {field}: the paper says {expected} ({source})'


def test_base_configs_validate():
  for module, _ in TABLES.values():
    config_lib.validate(module.get_config('base'))


# ---------------------------------------------------------------------------
# BERT: predictions per row follow the length; the masked share is 15% at 128 and 512.

PIECES = 1000


def _bert(seq_len):
  config = bert_configs.get_config('base')
  config.data.seq_len = seq_len
  return config, objectives.get_objective(config, vocab.VocabInfo(PIECES))


@pytest.mark.parametrize('seq_len, predictions', [(128, 20), (512, 80)])  # BERT-code
def test_bert_predictions_per_row_follow_the_length(seq_len, predictions):
  config, objective = _bert(seq_len)
  assert config_lib.max_predictions(config) == predictions
  assert objective.targets_length == predictions


@pytest.mark.parametrize('seq_len', [128, 512])
def test_bert_masks_15_percent_split_80_10_10(seq_len):
  _, objective = _bert(seq_len)
  rows = 8192 // seq_len * 8
  rng = np.random.RandomState(seq_len)
  tokens = rng.randint(vocab.FIRST_ORDINARY_ID, PIECES, (rows, seq_len)).astype(np.int32)
  batch = dict(tokens=tokens, segment_ids=np.ones_like(tokens),
               positions=np.tile(np.arange(seq_len, dtype=np.int32), (rows, 1)))
  inputs, targets, weights = jax.jit(objective)(batch, jax.random.PRNGKey(0))
  weights, targets = np.asarray(weights), np.asarray(targets)
  positions = np.asarray(inputs['predict_positions'])
  chosen = weights.sum()
  # 15% of every row (BERT 3.1): round(0.15 x L) per row, 77 of 512, 19 of 128.
  assert chosen / tokens.size == pytest.approx(0.15, abs=0.005)
  assert (weights.sum(1) == round(0.15 * seq_len)).all()
  # Of the chosen tokens 80% [MASK], 10% a random piece, 10% kept (BERT 3.1), each within
  # 4 standard deviations of a binomial over the chosen count.
  live = weights > 0
  shown = np.take_along_axis(np.asarray(inputs['tokens']), positions, axis=1)[live]
  original = targets[live]
  np.testing.assert_array_equal(original, np.take_along_axis(tokens, positions, 1)[live])
  shares = {'mask': np.mean(shown == vocab.MASK_ID),
            'random': np.mean((shown != vocab.MASK_ID) & (shown != original)),
            'kept': np.mean(shown == original)}
  for name, p in (('mask', 0.8), ('random', 0.1 * (1 - 1 / PIECES)), ('kept', 0.1)):
    assert abs(shares[name] - p) < 4 * np.sqrt(p * (1 - p) / chosen), (name, shares)


# ---------------------------------------------------------------------------
# T5: 512 inputs from 568 raw tokens, 114 targets; the schedule.

def test_t5_span_corruption_lengths():
  config = t5_configs.get_config('base')
  objective = objectives.get_objective(config, vocab.VocabInfo(32000))
  assert (objective.raw_length, objective.inputs_length, objective.targets_length) == (
      568, 512, 114)  # T5-code random_spans_helper


def _lr(config, n):
  return float(optim.make_schedule(config)(n - 1))  # n: the 1-based update number


def test_t5_schedule_is_flat_then_inverse_square_root():
  config = t5_configs.get_config('base')
  for n in (1, 100, 10_000):
    assert _lr(config, n) == pytest.approx(0.01, rel=1e-6)      # T5 3.1.2: held at 0.01
  for n in (40_000, 2**19):
    assert _lr(config, n) == pytest.approx(1 / np.sqrt(n), rel=1e-6)


def test_bert_schedule_warms_up_and_decays_linearly():
  config = bert_configs.get_config('base')
  assert _lr(config, 5_000) == pytest.approx(0.5e-4, rel=1e-6)
  assert _lr(config, 10_000) == pytest.approx(1e-4, rel=1e-6)
  assert _lr(config, 505_000) == pytest.approx(0.5e-4, rel=1e-6)
  assert _lr(config, 1_000_000) == pytest.approx(0.0, abs=1e-12)


def test_gpt2_schedule_is_cosine():
  config = gpt_configs.get_config('base')
  w, s = config.optim.warmup_steps, config.train.steps
  assert _lr(config, w + (s - w) // 2) == pytest.approx(0.5 * config.optim.lr, rel=1e-3)
