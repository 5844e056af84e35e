"""Issue 6's fine-tuning table: every grid cell is a valid config; the table's cells."""

import os

import numpy as np
import pytest

from ptlm_jax import config_lib

from experiments import stats
from experiments.compare_objectives import plan
from experiments.finetune_table import grid as table


@pytest.mark.parametrize('task', list(table.TASK_FAMILIES))
def test_every_cell_of_the_grid_is_a_valid_config(task):
  for family in table.TASK_FAMILIES[task][0]:
    for method in table.METHODS:
      config = table.run_config(task, family, method, '/tmp/pretrained', steps=40, eval_examples=8,
                                seed=2)
      config_lib.validate(config)
      assert config.model.family == family and config.train.steps == 40
      assert config.train.seed == config.data.shuffle_seed == 2000
      assert config.optim.lr == table.METHODS[method][1]
      assert config.optim.warmup_steps == 4 and config.task.eval_examples == 8
      expected = {'full': 'none', 'frozen': 'none'}.get(method, method)
      assert config.peft.method == expected


def test_the_comparisons_recipe_is_the_default():
  s = plan.Settings()
  rt = table.run_config('rotten_tomatoes', 'bert', 'full', '/tmp/pretrained', steps=0,
                        eval_examples=0)
  assert (rt.train.steps, rt.data.train_split) == (s.finetune_steps, s.finetune_train_split)
  ner = table.run_config('shakespeare_ner', 't5', 'lora', '/tmp/pretrained', 0, 0)
  assert (ner.train.steps, ner.data.train_split) == (s.ner_steps, s.ner_train_split)
  qa = table.run_config('shakespeare_qa', 'bert', 'full', '/tmp/pretrained', 0, 0)
  assert qa.train.steps == table.DEFAULT_STEPS and qa.data.train_split == 'train'


def test_cells_with_counts_get_intervals_and_a_paired_test(tmp_path):
  # rotten_tomatoes bert, 2 seeds x 100 examples: full right on 80, lora on the same 80
  # but 10 (a loss of 10 points on 10 disagreements: p = 2 / 2^10 by McNemar).
  right = lambda k: stats.correct_counts(np.arange(100) < k)
  cells = []
  for method, k in (('full', 80), ('lora', 70)):
    for seed in (0, 1):
      directory = table.run_dir(str(tmp_path), 'rotten_tomatoes', 'bert', method, seed)
      os.makedirs(directory)
      np.save(os.path.join(directory, 'counts.npy'), right(k))
      cells.append(dict(task='rotten_tomatoes', family='bert', method=method,
                        metric='task_accuracy', value=k / 100, trainable=1, total=1, seed=seed,
                        counts='counts.npy'))
  assert cells[2]['seed'] == 0 and table.run_dir('w', 't', 'f', 'm', 1) == 'w/t/f-m-s1'
  line = table.format_table(cells, ['full', 'lora'], str(tmp_path)).splitlines()[2]
  full, lora = line.split(' | ')[3:5]
  assert full.startswith('80.0 [') and full.endswith('(100%)')
  assert lora.startswith('70.0 [') and ' Δ -10.0 p 0.0' in lora
  # A method not run yet (an interrupted grid) is a dash, beside cells with intervals.
  assert table.format_table(cells[:2], ['full', 'lora'], str(tmp_path)).endswith('| – |')
  # Without counts: mean ± standard deviation over the seeds.
  plain = [dict(c, counts=None, value=v) for c, v in zip(cells[:2], (0.5, 0.7))]
  assert '60.0 ± 14.1 (100%)' in table.format_table(plain, ['full'], str(tmp_path))


def test_table_cells_give_the_metric_and_the_trainable_share():
  results = [
      dict(task='rotten_tomatoes', family='bert', method='full', metric='task_accuracy',
           value=0.6511, trainable=760_322, total=760_322),
      dict(task='rotten_tomatoes', family='bert', method='lora', metric='task_accuracy',
           value=0.5, trainable=8_450, total=768_772),
      dict(task='shakespeare_ner', family='t5', method='full', metric='task_entity_f1',
           value=0.2613, trainable=10, total=10),
      dict(task='news_headlines', family='t5', method='full', metric='task_rougeL',
           value=12.34, trainable=10, total=10)]
  lines = table.format_table(results, ['full', 'lora']).splitlines()
  assert lines[0] == '| task | family | metric | full | lora |'
  # accuracy as a percentage; 8,450 / 768,772 = 1.099% -> '1.1%'; ROUGE is already x100.
  assert lines[2] == '| rotten_tomatoes | bert | accuracy | 65.1 (100%) | 50.0 (1.1%) |'
  assert lines[3] == '| shakespeare_ner | t5 | entity F1 | 26.1 (100%) | – |'
  assert lines[4] == '| news_headlines | t5 | ROUGE-L | 12.3 (100%) | – |'
