"""The runs of the objective comparison: arms, one optimizer, matched compute, fine-tuning.

  settings = plan.Settings(corpus='news')
  runs = plan.pretraining_runs(settings, seed=0)     # one per arm, e.g. gpt:prefix_lm
  for run in runs: run.config.train.steps            # chosen so that steps x FLOPs/step match
  ft = plan.finetune_config(settings, 'bert', source=workdir, seed=0)

Arms.  An arm is (architecture, objective): `bert:mlm`, `gpt:causal_lm`, `gpt:prefix_lm`,
`t5:span_corruption`, `t5:prefix_lm` by default (`--arms`).  The default holds one factor
fixed in pairs (`attribution_pairs`): the same architecture with two objectives (GPT:
causal vs prefix LM; T5: span corruption vs prefix LM) and the same objective on two
architectures (prefix LM on the decoder-only and on the encoder-decoder), as the T5 paper
(Raffel et al. 2020, Tables 2 and 4) separates them; BERT's MLM stays as the reference.

One optimizer.  Every arm trains with the same optimizer, peak learning rate, warmup and
decay (`OPTIMIZERS[settings.optimizer]`: AdamW at 1e-3, 10% warmup, linear decay by
default), so no difference comes from Adafactor or a schedule; `--optimizer=family` gives
each family its own (BERT / GPT AdamW, T5 Adafactor at 1e-2, inverse square root), the
setup of the papers.

Compute is matched in training FLOPs.  Each arm's FLOPs per step come from `step_flops`,
which makes the same calls as the trainer before it prints "... FLOPs per step"
(train.run: the abstract state of the real model and objective, then
flops.flops_per_step over the lengths the objective feeds the model); each run then gets
steps = round(budget / FLOPs per step), so the totals agree to within half a step.  All
runs share the tokenizer, the model width and depth, the row length, the batch and the
document order (data.shuffle_seed), so only the objective and the architecture differ.
T5's span corruption reads rows of `objective.raw_length` > seq_len packed tokens, so it
sees a little more text per step; the report lists the tokens each run read.

Fine-tuning (rotten_tomatoes and shakespeare_ner, the same recipe for every model): a
classification head on the mean of the final hidden states (sentiment) or a token
classification head (NER), AdamW with linear warmup and decay, `finetune_steps` /
`ner_steps` updates of batch 32, `finetune_seeds` seeds; the pretrained model starts from
the pretraining workdir (init.source), the from-scratch model is the identical config with
random weights (same tokenizer, architecture, seeds, data order and dropout): one per
architecture, shared by the arms of that architecture.
"""
from __future__ import annotations

import dataclasses
import math
import os

from ptlm_jax import config_lib, errors, families

FAMILIES = ('bert', 'gpt', 't5')
OBJECTIVE = {'bert': 'mlm', 'gpt': 'causal_lm', 't5': 'span_corruption'}  # each family's own
DEFAULT_ARMS = 'bert:mlm,gpt:causal_lm,gpt:prefix_lm,t5:span_corruption,t5:prefix_lm'
ARCHITECTURE = {'bert': 'encoder', 'gpt': 'decoder-only', 't5': 'encoder-decoder'}
OBJECTIVE_WORDS = {'mlm': 'masked LM', 'causal_lm': 'causal LM', 'prefix_lm': 'prefix LM',
                   'span_corruption': 'span corruption', 'ul2': 'UL2'}

# The one optimizer every arm shares (optim.* fields); warmup is 10% of each run's steps.
# 'family' keeps each family's own (config_lib: BERT / GPT AdamW, T5 Adafactor, rsqrt).
OPTIMIZERS = {
    'adamw': dict(optimizer='adamw', lr=1e-3, decay='linear', b1=0.9, b2=0.98, eps=1e-8,
                  weight_decay=0.01),
    'adafactor': dict(optimizer='adafactor', lr=1e-2, decay='rsqrt', weight_decay=0.0),
    'family': {},
}


@dataclasses.dataclass(frozen=True)
class Arm:
  """One pretraining setup of the comparison: an architecture (family) and an objective."""
  family: str
  objective: str

  @property
  def name(self) -> str:
    return f'{self.family}:{self.objective}'

  @property
  def dirname(self) -> str:
    """Its pretraining workdir under `<workdir>/seed<k>/`."""
    return f'{self.family}-{self.objective}-pretrain'

  @property
  def words(self) -> str:
    return f'{OBJECTIVE_WORDS.get(self.objective, self.objective)} on the {ARCHITECTURE[self.family]}'


def parse_arms(text: str, flag: str = '--arms') -> tuple[Arm, ...]:
  """'bert:mlm,gpt:prefix_lm' -> Arms; UserError naming the flag and the accepted pairs."""
  accepted = ', '.join(f'{f}:{o}' for f in FAMILIES for o in families.get(f).objectives)
  arms = []
  for item in [x.strip() for x in str(text).split(',') if x.strip()]:
    family, _, objective = item.partition(':')
    if family not in FAMILIES or objective not in families.get(family).objectives:
      raise errors.UserError(f'{flag}={text}: {item!r} is not an arm: expected '
                             f'architecture:objective, one of {accepted}')
    arm = Arm(family, objective)
    if arm in arms:
      raise errors.UserError(f'{flag}={text}: {item!r} is listed twice')
    arms.append(arm)
  if not arms:
    raise errors.UserError(f'{flag}={text!r}: expected at least one arm ({accepted})')
  return tuple(arms)


def attribution_pairs(arms) -> list[tuple[Arm, Arm, str]]:
  """(a, b, the factor held fixed) for every pair of arms that differ in one factor only:
  'architecture' (same family, two objectives) or 'objective' (same objective, two
  families).  In the order of `arms`."""
  pairs = []
  for i, a in enumerate(arms):
    for b in arms[i + 1:]:
      if a.family == b.family:
        pairs.append((a, b, 'architecture'))
      elif a.objective == b.objective:
        pairs.append((a, b, 'objective'))
  return pairs


def apply_optimizer(config, name: str) -> None:
  """Sets config.optim to the shared optimizer `name` (OPTIMIZERS); warmup is 10% of steps."""
  if name not in OPTIMIZERS:
    raise errors.UserError(f'--optimizer={name}: expected one of {", ".join(OPTIMIZERS)}')
  config.optim.update(OPTIMIZERS[name])
  config.optim.warmup_steps = max(1, config.train.steps // 10)


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything that sizes the comparison (the CLI flags of __main__.py)."""
  corpus: str = 'news'              # pretraining corpus: news | shakespeare
  budget_flops: float = 3e12        # training FLOPs of each pretraining run (15-minute budget)
  sp_vocab_size: int = 2000         # tokenizer pieces (all runs)
  sp_train_chars: int = 20_000_000  # tokenizer training text (characters of the train split)
  d_model: int = 128
  num_layers: int = 2               # T5: encoder and decoder layers each
  num_heads: int = 2
  seq_len: int = 128                # packed row length (T5: encoder inputs)
  batch_size: int = 32
  eval_points: int = 4              # validation evaluations (and probe points) per pretraining run
  eval_steps: int = 8               # validation batches per evaluation
  # Fine-tuning recipe, the same for every model; steps and splits chosen from measured
  # validation curves (README, "Fine-tuning recipe"), seeds by the 15-minute budget.
  finetune_seeds: int = 1           # fine-tuning runs per model and task (seeds 0..F-1)
  # Fine-tuning tasks.  Sentiment is measured by the probe at every evaluation; within the
  # 15 minutes the fine-tuning goes to the token-level task (docs/experiments.md).
  tasks: tuple[str, ...] = ('shakespeare_ner',)
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
  arms: str = DEFAULT_ARMS          # architecture:objective, comma-separated (parse_arms)
  optimizer: str = 'adamw'          # shared by every arm: OPTIMIZERS
  probe: bool = True                # a linear probe (probe.py) at every pretraining evaluation
  probe_train_examples: int = 1000  # rotten_tomatoes train snippets the probe fits on


@dataclasses.dataclass
class Run:
  arm: Arm
  config: object          # ml_collections.ConfigDict
  flops_per_step: float   # as the trainer counts them (model + head)
  params: int
  row_length: int         # packed tokens read per row

  @property
  def family(self) -> str:
    return self.arm.family

  @property
  def objective(self) -> str:
    return self.arm.objective


def base_pretraining_config(settings: Settings, family: str, seed: int, objective: str = ''):
  """The arm's tiny config at the comparison's shared sizes (steps and optimizer not yet set)."""
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
  c.objective.name = objective or OBJECTIVE[family]
  c.train.seed = seed
  c.train.batch_size = s.batch_size
  c.train.eval_steps = s.eval_steps
  c.train.keep_checkpoints = 1
  c.train.keep_best_by = ''
  c.parallel.num_devices = s.num_devices
  return c


def step_flops(config, vocab_info=None) -> tuple[float, int, int, int]:
  """(FLOPs per step, parameters, row length, decoder length or 0) exactly as train.run
  counts them.  vocab_info: the tokenizer's (default: trains or loads the config's)."""
  # pylint: disable=g-import-not-at-top  (heavy: jax, flax, the tokenizer)
  import jax
  from ptlm_jax import flops, models, objectives
  from ptlm_jax.data import tokenizer as tokenizer_lib
  from ptlm_jax.training import train
  vocab_info = vocab_info or tokenizer_lib.get_tokenizer(config).vocab_info
  components = train.Components(models.build_model(config.model),
                                objectives.get_objective(config, vocab_info), train_iter=None)
  spec = train.make_state_spec(config, components, jax.random.PRNGKey(0))
  counts = flops.count_params(spec.boxed_params)
  # The same lengths train.run hands to flops.flops_per_step.
  lengths = {k: v.shape[1] for k, v in spec.example_inputs.items() if getattr(v, 'ndim', 0) == 2}
  decoder_length = lengths.get('decoder_tokens', 0)
  step = flops.flops_per_step(
      config.model, counts, config.train.batch_size,
      lengths.get('encoder_tokens', lengths.get('tokens', spec.row_length)),
      target_length=decoder_length, output_length=spec.example_targets.shape[1])
  return step['model'] + step['head'], counts['params_total'], spec.row_length, decoder_length


def pretraining_runs(settings: Settings, seed: int, arms=None) -> list[Run]:
  """One run per arm with steps x FLOPs/step = budget (rounded), all on the one optimizer.

  arms: Arms (default: settings.arms)."""
  runs = []
  for arm in arms or parse_arms(settings.arms):
    c = base_pretraining_config(settings, arm.family, seed, arm.objective)
    per_step, params, row_length, _ = step_flops(c)
    steps = max(settings.min_steps, round(settings.budget_flops / per_step))
    t = c.train
    t.steps = steps
    t.eval_every = math.ceil(steps / settings.eval_points)  # the last one lands on `steps`
    t.log_every = max(1, min(t.eval_every, steps // 20))
    t.checkpoint_every = steps
    apply_optimizer(c, settings.optimizer)  # warmup: 10% of the steps
    config_lib.validate(c)
    runs.append(Run(arm, c, per_step, params, row_length))
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
