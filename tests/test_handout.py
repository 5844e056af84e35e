"""The handout's answers against hand computation (experiments/handout/)."""
import math

import numpy as np
import pytest

from experiments.handout import answers, exercises, measured


def test_bert_masking_through_the_objective_is_80_10_10():
  m = exercises.masking_exercise()  # 20,000 draws
  # 15% of 5 tokens: BERT's max(1, round(0.75)) = 1 position per draw.
  assert m['tokens_chosen_per_draw'] == [1]
  # Binomial standard errors at n = 20,000: <= 0.0029; bounds are 5 of them.
  np.testing.assert_allclose(m['position_frequency'], [0.2] * 5, atol=0.015)
  assert m['mask_frequency'] == pytest.approx(0.8, abs=0.015)
  assert m['random_frequency'] == pytest.approx(0.1 * 992 / 993, abs=0.011)
  assert m['unchanged_frequency'] == pytest.approx(0.1 + 0.1 / 993, abs=0.011)
  assert m['mask_frequency'] + m['random_frequency'] + m['unchanged_frequency'] == pytest.approx(1)


@pytest.mark.parametrize('n', answers.ATTENTION_LENGTHS)
def test_attention_connections_are_n_squared_and_n_n_plus_1_over_2(n):
  counts = exercises.attention_connections(n)
  assert counts == {'bert': n * n, 'gpt': n * (n + 1) // 2}


def test_softmax_and_temperature():
  table = exercises.softmax_exercise()
  z = sum(math.exp(x) for x in (2.5, 1.0, 0.5, 1.5))
  assert table[1.0]['sat'] == pytest.approx(math.exp(2.5) / z)
  assert round(table[1.0]['sat'], 4) == 0.5793
  assert round(table[1.0]['slept'], 4) == 0.2131
  # T = 0.5 is softmax of the doubled logits: e^5 / (e^5 + e^2 + e^1 + e^3).
  assert table[0.5]['sat'] == pytest.approx(math.exp(5) / sum(math.exp(x) for x in (5, 2, 1, 3)))
  entropies = [exercises.entropy_bits(table[t]) for t in (0.5, 1.0, 2.0)]
  assert entropies == sorted(entropies) and entropies[-1] < 2.0  # flatter, below uniform's 2 bits


def test_lora_cost_and_carbon_answers():
  lora = exercises.lora_exercise()
  assert lora['lora_params'] == 16 * (768 + 768) == 24_576
  assert round(lora['percent_of_matrix'], 2) == 4.17
  assert lora['percent_of_model'] == pytest.approx(100 * 24_576 / 340e6)
  # BERT-large: 24 layers x (query + value) x r (1024 + 1024).
  assert lora['bert_large_trainable'] == 24 * 2 * 16 * (1024 + 1024)

  cost = exercises.cost_exercise()
  assert cost == {'scratch_total': 2_500_000, 'shared_total': 1_050_000, 'saved': 1_450_000,
                  'saved_percent': 58.0}

  carbon = exercises.carbon_exercise()
  assert carbon['finetune_co2_t'] == pytest.approx(4.29)           # 10,000 kWh x 0.429
  assert carbon['saving_percent'] == pytest.approx(100 * (1 - 10 / 1287))
  assert carbon['energy_mwh'] == pytest.approx(1287, rel=0.05)      # handout: 1,287 MWh
  assert carbon['co2_t'] == pytest.approx(552, rel=0.05)            # handout: 552 t


def test_model_and_task_tables_come_from_the_configs():
  params = {r['model']: r['params'] for r in exercises.model_table()}
  assert 330e6 < params['BERT'] < 345e6 and 1.5e9 < params['GPT'] < 1.6e9
  assert 11.0e9 < params['T5'] < 11.5e9
  tasks = {r['task']: (r['family'], r['head']) for r in exercises.task_table()}
  assert tasks['Sentiment analysis'] == ('bert', 'sequence_classification')
  assert tasks['Named entity recognition'] == ('bert', 'token_classification')
  assert tasks['Translation'] == ('t5', 'lm') and tasks['Text generation'] == ('gpt', 'lm')


def test_answers_file_has_every_exercise(tmp_path):
  path = answers.write(str(tmp_path), measured_part=False, log=lambda _: None)
  text = open(path, encoding='utf-8').read()
  for needle in ('$2,500,000', '$1,450,000', '0.5793', '24,576', '4.17%', '| 64 | 4096 | 4096 | 2080 | 2080 |',
                 '4.29 t CO2', '99.2%', 'Encoder-Decoder', 'Named entity recognition'):
    assert needle in text, needle


def test_backbone_goes_back_under_the_lm_head():
  pre = {'embed': {'w': np.zeros(2)}, 'mlm_head': {'b': np.ones(3)}}
  tuned = {'backbone': {'embed': {'w': np.full(2, 5.0)}}, 'head': {'kernel': np.ones(4)}}
  merged = measured.backbone_under_lm_head(pre, tuned)
  np.testing.assert_array_equal(merged['embed']['w'], [5.0, 5.0])   # the fine-tuned encoder
  np.testing.assert_array_equal(merged['mlm_head']['b'], [1, 1, 1])  # the pretrained LM head
  assert 'head' not in merged


def test_finetune_answers_read_the_measurements():
  rows = [measured.FinetuneRow('a', 2e-5, 'none', 100.0, 0.5859, 5.865, 5.866),
          measured.FinetuneRow('b', 1e-3, 'none', 100.0, 0.6511, 5.865, 5.986),
          measured.FinetuneRow('c', 1e-2, 'none', 100.0, 0.5859, 5.865, 7.757),
          measured.FinetuneRow('d', 1e-3, 'freeze_layers=1', 26.8, 0.5859, 5.865, 5.909)]
  text = answers.finetune_section(rows, quick=False, majority=0.5859)
  assert '| c | 0.01 | none | 100.0% | 0.5859 | 5.865 → 7.757 | +1.892 |' in text
  assert 'majority class scores 0.5859' in text
  assert 'forgetting +0.044 instead of +0.121, accuracy 0.5859 instead of 0.6511' in text
  assert 'MLM loss +0.001' in text and 'MLM loss +1.892' in text


@pytest.mark.parametrize('temperature', [0.5, 1.0, 2.0])
def test_softmax_example_equals_hand_computation(temperature):
  e = [math.exp(x / temperature) for x in (2.5, 1.0, 0.5, 1.5)]
  expected = dict(zip(('sat', 'ran', 'jumped', 'slept'), (x / sum(e) for x in e)))
  got = exercises.softmax_example(temperature)
  assert list(got) == list(expected)
  for word in expected:
    assert got[word] == pytest.approx(expected[word], rel=1e-12)
  if temperature == 1.0:  # e^2.5 / (e^2.5 + e^1 + e^0.5 + e^1.5)
    assert got['sat'] == pytest.approx(12.182494 / 21.031175, rel=1e-6)


def test_lora_example_reproduces_the_handout():
  example = exercises.lora_example(768, 768, rank=16, model_params=340_000_000)
  assert example['matrix_params'] == 768 * 768 == 589_824
  assert example['lora_params'] == 16 * 768 + 16 * 768 == 24_576
  assert round(example['percent_of_matrix'], 2) == 4.17
  assert round(example['percent_of_model'], 5) == 0.00723  # 24,576 / 340M
