"""answers.md: the handout's exercises in its order, each with the number the library gives.

  path = answers.write('runs/handout', quick=False, compare_workdir='runs/compare')

`sections()` (no training) and `measured_sections(...)` return markdown blocks; `write`
joins them.  The order follows the handout: A5 cost, B1 masking and attention, B2
softmax and temperature (+ generation demo), B3/B5 fine-tuning (measured), B4 tables,
B6 LoRA and carbon.
"""
from __future__ import annotations

import os
import time

from experiments import collect
from experiments.handout import exercises, measured


ATTENTION_LENGTHS = (1, 2, 6, 10, 64)


def _money(x: float) -> str:
  return f'${x:,.0f}'


def cost_section() -> str:
  c = exercises.cost_exercise()
  return '\n'.join([
      '## A5. The cost problem',
      '',
      f'- Five companies each training from scratch: 5 × $500,000 = **{_money(c["scratch_total"])}**',
      f'- One general model plus five adaptations: $1,000,000 + 5 × $10,000 = '
      f'**{_money(c["shared_total"])}**',
      f'- Money saved: **{_money(c["saved"])}** ({c["saved_percent"]:.0f}%). Also saved: the '
      'energy and CO2 of four redundant pretraining runs, the accelerator time, and the '
      'labelled data each company would need to learn language itself.',
  ])


def masking_section() -> str:
  m = exercises.masking_exercise()
  freq = ', '.join(f'{w} {p:.3f}' for w, p in zip(exercises.SENTENCE, m['position_frequency']))
  return '\n'.join([
      '## B1. BERT\'s masked language modelling',
      '',
      'Run through the real objective (`ptlm_jax/objectives/mlm.py`, BERT\'s fixed count '
      f'mode) on "The quick brown fox jumps" (five word ids), {m["draws"]:,} independent draws:',
      '',
      f'- tokens chosen per draw: {m["tokens_chosen_per_draw"]} (15% of 5 = 0.75, rounded: '
      'max(1, round(0.75)) = 1, as the handout says)',
      f'- how often each position is the chosen one: {freq} (uniform: 0.2 each; "brown" '
      f'{m["brown_frequency"]:.3f})',
      f'- what the chosen token becomes: [MASK] **{m["mask_frequency"]:.3f}** (expected 0.8), '
      f'a random token **{m["random_frequency"]:.3f}** (0.1), unchanged '
      f'**{m["unchanged_frequency"]:.3f}** (0.1; a random draw can also hit the same word, '
      'probability 0.1 / 993)',
      '- four draws: ' + '; '.join(f'`{e}`' for e in m['examples']),
      '',
      'Why not 50%? With half the words hidden, the context left is too thin to predict '
      'them (the task becomes guessing), and the inputs look even less like the unmasked '
      'text seen at fine-tuning time; 15% keeps enough context while still giving a '
      'training signal at every seventh position.',
  ])


def attention_section() -> str:
  rows = [[n, c['bert'], n * n, c['gpt'], n * (n + 1) // 2]
          for n, c in ((n, exercises.attention_connections(n)) for n in ATTENTION_LENGTHS)]
  masks = exercises.model_masks('gpt', 6)['attention']
  grid = '\n'.join('    ' + ' '.join('Yes' if v else 'No ' for v in row) for row in masks)
  return '\n'.join([
      '### Bidirectional vs causal attention: connections for length n',
      '',
      'Counted in the boolean masks the models actually build (captured from a forward '
      'pass of `models/bert.py` and `models/gpt.py`):',
      '',
      collect.markdown_table(['n', 'BERT (counted)', 'n²', 'GPT (counted)', 'n(n+1)/2'], rows),
      '',
      '**BERT: n² connections; GPT: n(n+1)/2.** GPT\'s mask for "The cat sat on the mat" '
      '(row = from, column = to):',
      '',
      grid,
  ])


def softmax_section(demo: dict | None) -> str:
  table = exercises.softmax_exercise()
  header = ['temperature', 'sat', 'ran', 'jumped', 'slept', 'entropy (bits)']
  rows = [[f'{t:g}'] + [f'{p[w]:.4f}' for w in ('sat', 'ran', 'jumped', 'slept')]
          + [f'{exercises.entropy_bits(p):.3f}'] for t, p in table.items()]
  lines = [
      '## B2. GPT\'s next-token probabilities',
      '',
      'Logits [2.5, 1.0, 0.5, 1.5] after softmax (`exercises.softmax_example`):',
      '',
      collect.markdown_table(header, rows),
      '',
      f'P(sat) = e^2.5 / (e^2.5 + e^1 + e^0.5 + e^1.5) = **{table[1.0]["sat"]:.4f}**, '
      f'P(ran) = **{table[1.0]["ran"]:.4f}**, P(jumped) = **{table[1.0]["jumped"]:.4f}**, '
      f'P(slept) = **{table[1.0]["slept"]:.4f}**.',
      '',
      'Always taking the most probable word (greedy) is deterministic and tends to repeat '
      'itself. Temperature 0.5 sharpens the distribution (P(sat) 0.83: safe, repetitive), '
      '1.0 samples the model as trained, 2.0 flattens it towards uniform (P(sat) 0.41: '
      'diverse, less coherent).',
  ]
  if demo:
    lines += ['', f'"{measured.PROMPT}" continued by the tiny pretrained GPT '
              '(`inference.generate_text`, 24 new pieces, seed 0):', '']
    lines += [f'- **{name}**: {text!r}' for name, text in demo['generation'].items()]
    lines += ['', 'Fill-mask with the tiny pretrained BERT (`inference.fill_mask_text`, top 5):',
              '']
    for text, choices in demo['fill_mask'].items():
      lines.append(f'- `{text}` → ' + ', '.join(f'{t!r} {p:.3f}' for t, p in choices))
    tops = {choices[0][0] for choices in demo['fill_mask'].values() if choices}
    if len(tops) == 1:
      lines += ['', 'The same top guesses for every sentence: a model this small, pretrained for '
                'minutes, has learned which pieces are frequent, not yet what a context asks '
                'for (its masked-LM accuracy is about 11%). Filling these blanks with "mat", '
                '"store" and "dog" takes a base-size model and days of pretraining.']
    else:
      lines += ['', 'A model this small, pretrained for minutes, fills blanks from the context '
                'only roughly; "mat", "store" and "dog" take a base-size model and days of '
                'pretraining.']
  return '\n'.join(lines)


def finetune_section(rows: list | None, quick: bool, majority: float | None = None) -> str:
  lines = [
      '## B3 / B5. Fine-tuning: learning rate, forgetting, frozen layers',
      '',
      'The handout\'s recipe (`configs/finetune/*.py`): AdamW at 2e-5, warmup over the first '
      '10% of steps, linear decay to 0, weight decay 0.01 (biases and norms excluded), batch '
      '32, 3 epochs; freezing the embeddings is optional (`--config.peft.freeze_embeddings='
      'True`); `learning_rate=1e-2` overwrites what pretraining learned (catastrophic '
      'forgetting) or diverges. A schedule against forgetting: a small peak LR (2e-5 for '
      'base-size models), ~10% warmup, linear decay, and the embeddings (or bottom layers) '
      'frozen when the task data is small.',
  ]
  if rows:
    table = [[r.name, f'{r.lr:g}', r.frozen, f'{r.trainable_percent:.1f}%', f'{r.accuracy:.4f}',
              f'{r.mlm_loss_before:.3f} → {r.mlm_loss_after:.3f}',
              f'{r.mlm_loss_after - r.mlm_loss_before:+.3f}'] for r in rows]
    lines += [
        '',
        'Measured on the tiny pretrained BERT and rotten_tomatoes (one run each, the same '
        'recipe, only the asked-about knob changed' + ('; --quick' if quick else '') + '). '
        'Forgetting = the fine-tuned encoder under the pretrained MLM head, masked-LM loss on '
        'the news validation split with the same masks before and after:',
        '',
        collect.markdown_table(['run', 'LR', 'frozen', 'trainable', 'accuracy',
                                'MLM loss before → after', 'forgetting'], table),
    ]
    if majority is not None:
      lines += ['', f'Always answering the majority class scores {majority:.4f} here: a run at '
                'that accuracy learned nothing usable from the task.']
    frozen = [r for r in rows if r.frozen != 'none']
    by_name = {r.lr: r for r in rows if r.frozen == 'none'}
    if frozen and frozen[0].lr in by_name:
      f, full = frozen[0], by_name[frozen[0].lr]
      lines += ['', f'Freezing ({f.frozen}; {f.trainable_percent:.1f}% of the parameters train) '
                f'at the same LR {f.lr:g}: forgetting {f.mlm_loss_after - f.mlm_loss_before:+.3f} '
                f'instead of {full.mlm_loss_after - full.mlm_loss_before:+.3f}, accuracy '
                f'{f.accuracy:.4f} instead of {full.accuracy:.4f}. Frozen layers keep what '
                'pretraining learned, at the price of less room to fit the task.']
    if 2e-5 in by_name and 1e-2 in by_name:
      small, large = by_name[2e-5], by_name[1e-2]
      lines += ['', f'At 2e-5 the encoder barely moves (MLM loss {small.mlm_loss_after - small.mlm_loss_before:+.3f}) '
                f'and, at this tiny scale and step count, the classifier learns little '
                f'(accuracy {small.accuracy:.3f}); at 1e-2 the pretrained knowledge is '
                f'overwritten (MLM loss {large.mlm_loss_after - large.mlm_loss_before:+.3f}). '
                '2e-5 is the recipe for base-size models fine-tuned for epochs; a model of under a '
                'million parameters fine-tuned for a hundred steps needs ~1e-3.']
  return '\n'.join(lines)


def model_table_section() -> str:
  rows = exercises.model_table()
  p = {r['model']: r for r in rows}
  fmt = lambda r: f'{r["params"] / 1e6:,.0f}M' if r['params'] < 1e9 else f'{r["params"] / 1e9:.2f}B'
  header = ['Criterion', 'BERT', 'GPT', 'T5']
  table = [
      ['Parameters (handout)', p['BERT']['handout'], p['GPT']['handout'], p['T5']['handout']],
      ['Parameters (counted from `' + '`, `'.join(r['config'] for r in rows) + '`)',
       fmt(p['BERT']), fmt(p['GPT']), fmt(p['T5'])],
      ['Best for', 'understanding: classification, tagging, extractive QA', 'generation',
       'text-to-text: translation, summarisation'],
      ['Training objective', 'MLM (`mlm`)', 'causal LM (`causal_lm`)',
       'span corruption (`span_corruption`)'],
      ['Architecture', 'Encoder', 'Decoder', 'Encoder-Decoder'],
      ['Context', 'Bidirectional', 'Left-to-right (causal)',
       'Bidirectional encoder, causal decoder'],
  ]
  return '\n'.join(['## B4. Comparing architectures', '',
                    collect.markdown_table(header, table), '',
                    'Counted as HF `num_parameters()` counts them (tied embeddings once); the '
                    'handout\'s figures are the papers\' rounded ones for the same shapes.'])


def task_table_section() -> str:
  rows = [[r['task'], r['family'].upper(), f'`{r["config"]}`', r['head'], r['why']]
          for r in exercises.task_table()]
  return '\n'.join(['### Task matching (what this codebase runs for each)', '',
                    collect.markdown_table(['Task', 'Best model', 'config', 'head', 'why'], rows)])


def lora_section() -> str:
  l = exercises.lora_exercise()
  return '\n'.join([
      '## B6. Parameter-efficient fine-tuning: LoRA savings',
      '',
      f'W ∈ R^768×768 has {l["matrix_params"]:,} parameters; LoRA with r = 16 trains B (768×16) '
      f'and A (16×768): 16 × (768 + 768) = **{l["lora_params"]:,}** trainable parameters, '
      f'**{l["percent_of_matrix"]:.2f}%** of the matrix and {l["percent_of_model"]:.4f}% of a '
      '340M model (`exercises.lora_example`).',
      '',
      f'On the real BERT-large config with LoRA r = 16 on every query and value kernel '
      f'(`peft.config_report`): {l["bert_large_trainable"]:,} trainable of '
      f'{l["bert_large_total"]:,} (**{l["bert_large_percent"]:.2f}%**).',
  ])


def carbon_section() -> str:
  c = exercises.carbon_exercise()
  return '\n'.join([
      '### Environmental impact',
      '',
      f'The estimator on `configs/gpt.py:gpt3` ({c["params"] / 1e9:.1f}B parameters, 300B '
      'tokens, 10,000 V100s at 24.6 TFLOP/s, 330 W, PUE 1.1, 0.429 kg CO2/kWh — Patterson et '
      f'al. 2021\'s setting): {c["days"]:.1f} days, **{c["energy_mwh"]:,.0f} MWh**, '
      f'**{c["co2_t"]:,.0f} t CO2**, ${c["cost_usd"] / 1e6:.2f}M (handout: 1,287 MWh, 552 t, '
      '$4.6M).',
      '',
      '```',
      'python -m ptlm_jax.main.estimate --config=configs/gpt.py:gpt3 --accelerator=v100 \\',
      '    --num_devices=10000 --tokens=300e9 --mfu=0.1968 --pue=1.1 --grid_kg_per_kwh=0.429',
      '```',
      '',
      f'Fine-tuning at 10 MWh: 10,000 kWh × 0.429 kg/kWh = **{c["finetune_co2_t"]:.2f} t CO2** '
      f'(`estimate.co2_kg_for_energy`); at the same cost per kWh as the $4.6M run, '
      f'**${c["finetune_cost_usd"]:,.0f}**. Savings against pretraining from scratch: '
      f'1 − 10 / 1,287 = **{c["saving_percent"]:.1f}%**.',
  ])


def write(workdir: str, *, quick: bool = False, compare_workdir: str = 'runs/compare',
          measured_part: bool = True, log=print) -> str:
  """Computes every answer and writes `<workdir>/answers.md`; returns its path."""
  started = time.perf_counter()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  demo = rows = majority = None
  if measured_part:
    dirs = measured.pretrained_models(workdir, compare_workdir, quick, log)
    log('[handout] demos: fill-mask and generation')
    demo = measured.demos(dirs['bert'], dirs['gpt'])
    rows = measured.finetuning_questions(dirs['bert'], workdir, quick, log)
    majority = measured.majority_accuracy()
  log('[handout] exercises')
  parts = [
      '# Week 6 handout, answered by ptlm_jax',
      'Every number below is computed by this codebase (`python -m experiments.handout`); '
      'the code for each answer is in `experiments/handout/`.',
      cost_section(),
      masking_section(),
      attention_section(),
      softmax_section(demo),
      finetune_section(rows, quick, majority),
      model_table_section(),
      task_table_section(),
      lora_section(),
      carbon_section(),
      f'(written in {(time.perf_counter() - started) / 60:.1f} min'
      + (', measured part skipped: --only=exercises' if not measured_part else '') + ')',
  ]
  path = os.path.join(workdir, 'answers.md')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n\n'.join(parts) + '\n')
  return path
