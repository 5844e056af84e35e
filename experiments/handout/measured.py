"""The handout's questions answered by running models: demos and fine-tuning measurements.

  dirs = measured.pretrained_models(workdir, compare_workdir='runs/compare', quick=False)
  demos = measured.demos(dirs['bert'], dirs['gpt'])       # fill-mask, five decoding strategies
  rows = measured.finetuning_questions(dirs['bert'], workdir, quick=False)

Pretrained models: the default job's tiny BERT and GPT (`runs/compare/seed0/*-pretrain`)
when they exist, otherwise the same two runs trained here (plan.py's settings).

The fine-tuning questions (B3, B5) are measured on BERT and rotten_tomatoes, every run
with the handout's recipe (AdamW, 10% warmup, linear decay, weight decay 0.01) and only
the asked-about knob changed: the learning rate (2e-5, 1e-3, 1e-2) and frozen layers
(embeddings and the bottom layer).  Catastrophic forgetting is measured directly: the
fine-tuned backbone is put back under the pretrained MLM head and its masked-LM loss on
the pretraining validation split is compared with the pretrained model's, on the same
masks (`pretraining_loss`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

from experiments.compare_objectives import plan

PROMPT = 'Once upon a time'
FILL_MASK = ('The cat sat on the [MASK].', 'I went to the [MASK] to buy milk.',
             'The [MASK] barked loudly at the mailman.')


def pretrained_models(workdir: str, compare_workdir: str, quick: bool,
                      log: Callable[[str], None] = print) -> dict[str, str]:
  """{'bert': dir, 'gpt': dir}: the default job's seed-0 runs, or the same runs trained here."""
  from experiments.compare_objectives import runner  # pylint: disable=g-import-not-at-top
  settings = quick_settings() if quick else plan.Settings()
  reuse = os.path.join(compare_workdir, 'seed0') if compare_workdir else ''
  if reuse and all(os.path.isdir(os.path.join(reuse, plan.Arm(f, plan.OBJECTIVE[f]).dirname, 'checkpoints'))
                   for f in ('bert', 'gpt')):
    return runner.ensure_pretrained(settings, ('bert', 'gpt'), reuse, log)
  return runner.ensure_pretrained(settings, ('bert', 'gpt'), workdir, log)


def quick_settings() -> plan.Settings:
  """A few-minute version: a quarter of the pretraining compute, short fine-tunes."""
  return dataclasses.replace(plan.Settings(), budget_flops=plan.Settings().budget_flops / 4,
                             finetune_steps=100, finetune_eval_examples=400)


# ---------------------------------------------------------------------------
# Demos.

def demos(bert_dir: str, gpt_dir: str, max_new_tokens: int = 24) -> dict:
  """Fill-mask on the handout's sentences; 'Once upon a time' five ways."""
  # pylint: disable=g-import-not-at-top
  from ptlm_jax.decoding import generate, inference
  bert = inference.load(bert_dir)
  fill = {text: inference.fill_mask_text(bert, text, top_k=5)[0] for text in FILL_MASK}
  gpt = inference.load(gpt_dir)
  strategies = [('greedy', generate.Options(strategy='greedy', max_new_tokens=max_new_tokens))]
  strategies += [(f'sample, temperature {t:g}',
                  generate.Options(strategy='sample', temperature=t, max_new_tokens=max_new_tokens))
                 for t in (0.5, 1.0, 2.0)]
  strategies.append(('beam search, 4 beams',
                     generate.Options(strategy='beam', num_beams=4, max_new_tokens=max_new_tokens)))
  texts = {name: inference.generate_text(gpt, [PROMPT], inference.options_for(gpt, options),
                                         seed=0)[0]
           for name, options in strategies}
  return {'fill_mask': fill, 'generation': texts}


# ---------------------------------------------------------------------------
# Fine-tuning measurements.

@dataclasses.dataclass
class FinetuneRow:
  name: str
  lr: float
  frozen: str
  trainable_percent: float
  accuracy: float
  mlm_loss_before: float
  mlm_loss_after: float


QUESTIONS = (  # (name, lr, peft overrides)
    ('fine-tuning LR 2e-5', 2e-5, {}),
    ("LR 1e-3 (the comparison's recipe)", 1e-3, {}),
    ('too large: LR 1e-2', 1e-2, {}),
    ('LR 1e-3, embeddings + bottom layer frozen', 1e-3,
     {'freeze_embeddings': True, 'freeze_layers': 1}),
)


def pretraining_loss(config, params, batches: int = 8, seed: int = 1234) -> float:
  """Mean loss of `params` on `config`'s pretraining objective over validation batches.

  The same `seed` gives the same batches and masks, so two param sets are compared on
  exactly the same targets.
  """
  # pylint: disable=g-import-not-at-top
  import itertools
  import jax
  import numpy as np
  from ptlm_jax import models, objectives
  from ptlm_jax.data import pipeline, tokenizer as tokenizer_lib
  from ptlm_jax.training import losses, train
  tokenizer = tokenizer_lib.get_tokenizer(config)
  objective = objectives.get_objective(config, tokenizer.vocab_info)
  model = models.build_model(config.model)
  iterator = pipeline.make_pretrain_iterator(
      config, tokenizer, split=config.data.eval_split, row_length=objective.raw_length,
      process_index=0, process_count=1, infinite=False)

  @jax.jit
  def sums(params, batch, rng):
    inputs, targets, weights = train.apply_objective(objective, batch, rng, 0)
    logits = model.apply({'params': params}, **inputs, deterministic=True)
    return losses.weighted_cross_entropy(logits, targets, weights)

  nll = weight = 0.0
  for i, batch in enumerate(itertools.islice(iterator, batches)):
    out = jax.device_get(sums(params, batch, jax.random.fold_in(jax.random.PRNGKey(seed), i)))
    nll, weight = nll + float(np.asarray(out['nll'])), weight + float(np.asarray(out['weight']))
  return nll / max(weight, 1e-9)


def backbone_under_lm_head(pretrained_params, finetuned_params) -> dict:
  """The pretrained MLM model's params with every backbone param the fine-tune changed."""
  from ptlm_jax.peft import partitions as peft  # pylint: disable=g-import-not-at-top
  flat = peft.flatten(pretrained_params)
  tuned = peft.flatten(finetuned_params)
  for path in flat:
    if f'backbone/{path}' in tuned:
      flat[path] = tuned[f'backbone/{path}']
  return peft.unflatten(flat)


def finetuning_questions(bert_dir: str, workdir: str, quick: bool,
                         log: Callable[[str], None] = print) -> list[FinetuneRow]:
  """One rotten_tomatoes fine-tune per question; accuracy and MLM loss before/after."""
  # pylint: disable=g-import-not-at-top
  import json
  from ptlm_jax import main
  from ptlm_jax.training import checkpoint
  settings = quick_settings() if quick else plan.Settings()
  pre_config, pre_params = checkpoint.load_workdir_params(bert_dir)
  before = pretraining_loss(pre_config, pre_params)
  rows = []
  for i, (name, lr, freeze) in enumerate(QUESTIONS):
    config = plan.finetune_config(dataclasses.replace(settings, finetune_lr=lr), 'bert',
                                  bert_dir, seed=0, pretrained=True)
    config.peft.update(freeze)
    target = os.path.join(workdir, f'finetune-{i}')
    log(f'[handout] fine-tuning question {i + 1}/{len(QUESTIONS)}: {name} -> {target}')
    last = main.run(config, target)
    from experiments import collect
    scalars = collect.read_scalars(target)
    with open(os.path.join(target, 'params_report.json'), encoding='utf-8') as f:
      params_report = json.load(f)
    _, tuned = checkpoint.load_workdir_params(target)
    after = pretraining_loss(pre_config, backbone_under_lm_head(pre_params, tuned))
    del last
    rows.append(FinetuneRow(
        name=name, lr=lr,
        frozen=', '.join(f'{k}={v}' for k, v in freeze.items()) or 'none',
        trainable_percent=100.0 * params_report['trainable'] / params_report['total'],
        accuracy=scalars['eval/task_accuracy'][-1][1], mlm_loss_before=before,
        mlm_loss_after=after))
    log(f'[handout]   accuracy {rows[-1].accuracy:.4f}, MLM loss {before:.3f} -> {after:.3f}')
  return rows


def majority_accuracy() -> float:
  """The rotten_tomatoes validation accuracy of always answering the commoner label."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ptlm_jax.data import sources  # pylint: disable=g-import-not-at-top
  labels = np.asarray(sources.load_split('rotten_tomatoes', 'validation')['label'])
  return float(max(labels.mean(), 1 - labels.mean()))


def perplexity(loss: float) -> float:
  return math.exp(min(loss, 50.0))
