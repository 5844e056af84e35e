"""Issue 6's fine-tuning table: every grid cell is a valid config; the table's cells."""

import pytest

from ptlm_jax import config_lib

from experiments.finetune_table import grid as table


@pytest.mark.parametrize('task', list(table.TASK_FAMILIES))
def test_every_cell_of_the_grid_is_a_valid_config(task):
  for family in table.TASK_FAMILIES[task][0]:
    for method in table.METHODS:
      config = table.run_config(task, family, method, '/tmp/pretrained', steps=40, eval_examples=8)
      config_lib.validate(config)
      assert config.model.family == family and config.train.steps == 40
      assert config.optim.lr == table.METHODS[method][1]
      assert config.optim.warmup_steps == 4 and config.task.eval_examples == 8
      expected = {'full': 'none', 'frozen': 'none'}.get(method, method)
      assert config.peft.method == expected


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
