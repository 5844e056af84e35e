"""The runs of the objective comparison: configs, matched compute, fine-tuning recipe.

  settings = plan.Settings(corpus='news')
  runs = plan.pretraining_runs(settings, seed=0)     # bert/mlm, gpt/causal_lm, t5/span_corruption
  for run in runs: run.config.train.steps            # chosen so that steps x FLOPs/step match
  ft = plan.finetune_config(settings, 'bert', source=workdir, seed=0)

Compute is matched in training FLOPs.  Each family's FLOPs per step come from
`step_flops`, which makes the same calls as the trainer before it prints "... FLOPs
per step" (train.run: the abstract state of the real model and objective, then
flops.flops_per_step over the lengths the objective feeds the model); each run then gets
steps = round(budget / FLOPs per step), so the totals agree to within half a step.  The
three runs share the tokenizer, the model width and depth, the row length, the batch
and the document order (data.shuffle_seed), so only the objective (and the
architecture it implies) differs.  T5's span corruption reads rows of
`objective.raw_length` > seq_len packed tokens, so it sees a little more text per step;
the report lists the tokens each run read.

Fine-tuning (rotten_tomatoes and shakespeare_ner, the same recipe for every model): a
classification head on the mean of the final hidden states (sentiment) or a token
classification head (NER), AdamW with linear warmup and decay, `finetune_steps` /
`ner_steps` updates of batch 32, `finetune_seeds` seeds; the pretrained model starts from
the pretraining workdir (init.source), the from-scratch model is the identical config with
random weights (same tokenizer, architecture, seeds, data order and dropout).
"""
from __future__ import annotations

import dataclasses
import math
import os

from ptlm_jax import config_lib

FAMILIES = ('bert', 'gpt', 't5')
OBJECTIVE = {'bert': 'mlm', 'gpt': 'causal_lm', 't5': 'span_corruption'}


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that sizes the comparison (the CLI flags of __main__.py)."""
  corpus: str = 'news'              # pretraining corpus: news | shakespeare
  budget_flops: float = 6e12        # training FLOPs of each pretraining run
  sp_vocab_size: int = 2000         # tokenizer pieces (all runs)
  sp_train_chars: int = 20_000_000  # tokenizer training text (characters of the train split)
  d_model: int = 128
  num_layers: int = 2               # T5: encoder and decoder layers each
  num_heads: int = 2
  seq_len: int = 128                # packed row length (T5: encoder inputs)
  batch_size: int = 32
  eval_points: int = 6              # validation evaluations over a pretraining run
  eval_steps: int = 8               # validation batches per evaluation
  # Fine-tuning recipe, the same for every model; steps and splits chosen from measured
  # validation curves (README, "Fine-tuning recipe"), seeds by the 15-minute budget.
  finetune_seeds: int = 2           # fine-tuning runs per model and task (seeds 0..F-1)
  tasks: tuple[str, ...] = ('rotten_tomatoes', 'shakespeare_ner')
  finetune_steps: int = 300         # rotten_tomatoes updates (batch 32): ~1 epoch
  finetune_lr: float = 1e-3
  finetune_train_split: str = 'train'  # all 10,256 labelled snippets
  finetune_eval_examples: int = 0   # task metrics on the first N validation examples (0: all)
  finetune_batch_size: int = 32
  length_buckets: int = 3           # fine-tuning batches of similar length at 3 widths
  ner_steps: int = 200              # shakespeare_ner updates (batch 32): 1.6 epochs (150 stalled)
  ner_train_split: str = 'train[:4000]'  # labelled speeches
  min_steps: int = 1                # a floor on pretraining steps
  num_devices: int = 0              # devices each run uses (0: all)


@dataclasses.dataclass
class Run:
  family: str
  objective: str
  config: object          # ml_collections.ConfigDict
  flops_per_step: float   # as the trainer counts them (model + head)
  params: int
  row_length: int         # packed tokens read per row


def base_pretraining_config(settings: Settings, family: str, seed: int):
  """The family's tiny config at the comparison's shared sizes (steps not yet set)."""
  s = settings
  c = config_lib.base_config(family, 'tiny')
  c.data.corpus = s.corpus
  c.data.sp_vocab_size = s.sp_vocab_size
  c.data.sp_train_chars = s.sp_train_chars
  c.data.seq_len = s.seq_len
  c.data.pack_mode = 'pack'  # one stream for all three (T5's own default is 'chunk')
  c.data.shuffle_seed = seed
  c.model.vocab_size = config_lib.padded_vocab_size(s.sp_vocab_size)
  c.model.update(d_model=s.d_model, num_layers=s.num_layers, num_decoder_layers=s.num_layers,
                 num_heads=s.num_heads, head_dim=s.d_model // s.num_heads)
  # 4 x d_model; T5's gated MLP (three matrices) 2/3 of that, as config_lib sizes it.
  c.model.d_ff = 4 * s.d_model if family != 't5' else max(64, round(8 * s.d_model / 3 / 64) * 64)
  # A run this short is far from overfitting: dropout would only slow it down.
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.0
  c.objective.name = OBJECTIVE[family]
  c.train.seed = seed
  c.train.batch_size = s.batch_size
  c.train.eval_steps = s.eval_steps
  c.train.keep_checkpoints = 1
  c.train.keep_best_by = ''
  c.parallel.num_devices = s.num_devices
  return c


def step_flops(config) -> tuple[float, int, int]:
  """(FLOPs per step, parameters, row length) exactly as train.run counts them."""
  # pylint: disable=g-import-not-at-top  (heavy: jax, flax, the tokenizer)
  import jax
  from ptlm_jax import flops, models, objectives
  from ptlm_jax.data import tokenizer as tokenizer_lib
  from ptlm_jax.training import train
  vocab_info = tokenizer_lib.get_tokenizer(config).vocab_info
  components = train.Components(models.build_model(config.model),
                                objectives.get_objective(config, vocab_info), train_iter=None)
  spec = train.make_state_spec(config, components, jax.random.PRNGKey(0))
  counts = flops.count_params(spec.boxed_params)
  # The same lengths train.run hands to flops.flops_per_step.
  lengths = {k: v.shape[1] for k, v in spec.example_inputs.items() if getattr(v, 'ndim', 0) == 2}
  step = flops.flops_per_step(
      config.model, counts, config.train.batch_size,
      lengths.get('encoder_tokens', lengths.get('tokens', spec.row_length)),
      target_length=lengths.get('decoder_tokens', 0),
      output_length=spec.example_targets.shape[1])
  return step['model'] + step['head'], counts['params_total'], spec.row_length


def pretraining_runs(settings: Settings, seed: int) -> list[Run]:
  """The three runs with steps chosen so that steps x FLOPs/step = budget (rounded)."""
  runs = []
  for family in FAMILIES:
    c = base_pretraining_config(settings, family, seed)
    per_step, params, row_length = step_flops(c)
    steps = max(settings.min_steps, round(settings.budget_flops / per_step))
    t = c.train
    t.steps = steps
    t.eval_every = math.ceil(steps / settings.eval_points)  # the last one lands on `steps`
    t.log_every = max(1, min(t.eval_every, steps // 20))
    t.checkpoint_every = steps
    c.optim.warmup_steps = max(1, steps // 10)
    config_lib.validate(c)
    runs.append(Run(family, OBJECTIVE[family], c, per_step, params, row_length))
  return runs


def finetune_seed(seed: int, ft_seed: int) -> int:
  """The train / data-order seed of fine-tuning run `ft_seed` of pretraining seed `seed`."""
  return seed + 1000 * ft_seed  # ft_seed 0 keeps the pretraining seed, as before


def finetune_config(settings: Settings, family: str, source: str, seed: int,
                    pretrained: bool, task: str = 'rotten_tomatoes', ft_seed: int = 0):
  """`task` with a head, from `source` (pretrained) or the same model at random weights."""
  # pylint: disable=g-import-not-at-top
  from experiments import config_files
  from ptlm_jax.training import pretrained as pretrained_lib
  s = settings
  head = ',head' if task == 'rotten_tomatoes' else ''  # NER always has a head
  c = config_files.load(f'configs/finetune/{task}.py:{family}{head}')
  c.data.corpus = s.corpus
  c.data.train_split = s.finetune_train_split if task == 'rotten_tomatoes' else s.ner_train_split
  c.data.shuffle_seed = c.train.seed = finetune_seed(seed, ft_seed)
  c.init.source = os.path.abspath(source)
  # The same model either way: the source's architecture and tokenizer, fixed here.
  pretrained_lib.inherit_fields(c, pretrained_lib.load_source(c))
  if not pretrained:
    c.init.source = ''
  c.model.dropout_rate = c.model.attention_dropout_rate = 0.1
  if c.model.head == 'sequence_classification':
    # One head for all three: the mean of the final hidden states.  ([CLS] is never
    # trained by MLM here and GPT's last token by next-token prediction only.)
    c.model.pooling = 'mean'
  o, t = c.optim, c.train
  o.lr = s.finetune_lr
  t.batch_size = s.finetune_batch_size
  c.data.length_buckets = s.length_buckets
  t.steps = s.finetune_steps if task == 'rotten_tomatoes' else s.ner_steps
  o.warmup_steps = max(1, t.steps // 10)
  t.eval_every = t.checkpoint_every = t.steps
  t.log_every = max(1, t.steps // 5)
  t.eval_steps = 4
  t.keep_checkpoints = 1
  t.keep_best_by = ''
  c.task.eval_examples = s.finetune_eval_examples
  c.parallel.num_devices = s.num_devices
  config_lib.validate(c)
  return c
