"""The config system: one base config, family variants, and validation at load time.

Every run is described by one `ml_collections.ConfigDict` with these groups:

  model      architecture (family, sizes, dtype, scan/remat)
  data       corpus, tokenizer, packing
  objective  pretraining objective and its knobs
  optim      optimizer, schedule, clipping, accumulation
  parallel   pmap / mesh, mesh shape, multi-host
  train      steps, batch, eval/log/checkpoint cadence, seed
  peft       parameter partitions: frozen paths, LoRA / prefix / adapters
  init       where initial weights come from (scratch, a workdir, an HF dir)
  task       fine-tuning task: dataset, fields, format, lengths, metric ('' = pretraining)

Config files under `configs/` call `base_config(family, variant)` and override what
they need; `--config.optim.lr=3e-4` overrides from the command line; the dict is
locked so a typo in a field name is an error.  `validate(config)` runs before any
compilation and raises `ConfigError` naming the field, the value and what is allowed.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterable

import ml_collections

from ptlm_jax import families
from ptlm_jax.errors import ConfigError

FAMILIES = families.NAMES
VARIANTS = ('tiny', 'small', 'base')
NUM_SENTINELS = 100  # T5-style <extra_id_i> tokens above the SentencePiece pieces.


def padded_vocab_size(sp_vocab_size: int, multiple: int = 128) -> int:
  """Embedding rows for a SentencePiece vocab plus sentinels, rounded up for the MXU."""
  return int(math.ceil((sp_vocab_size + NUM_SENTINELS) / multiple) * multiple)


# Sizes per (family, variant).  tiny trains in seconds on one CPU core; small is the
# benchmark shape; base is BERT-base / GPT-2 124M / T5-base.
_SIZES = {
    'tiny': dict(d_model=128, num_layers=2, num_heads=2, d_ff=512, sp_vocab=8000),
    'small': dict(d_model=256, num_layers=4, num_heads=4, d_ff=1024, sp_vocab=8000),
    'base': dict(d_model=768, num_layers=12, num_heads=12, d_ff=3072, sp_vocab=32000),
}
_SEQ_LEN = {'tiny': 128, 'small': 128, 'base': 512}


def base_config(family: str = 'gpt', variant: str = 'tiny') -> ml_collections.ConfigDict:
  """The full default config of a family at a size; config files start from this."""
  fam = families.get(family)
  if variant not in VARIANTS:
    raise ConfigError('variant', variant, f'one of {VARIANTS}')
  size = _SIZES[variant]
  c = ml_collections.ConfigDict()

  # --- model ---------------------------------------------------------------
  c.model = m = ml_collections.ConfigDict()
  m.family = family                      # bert | gpt | t5
  m.vocab_size = padded_vocab_size(size['sp_vocab'])  # embedding rows (>= tokenizer size)
  m.d_model = size['d_model']            # hidden width
  m.num_layers = size['num_layers']      # encoder / decoder layers (T5: encoder)
  m.num_decoder_layers = size['num_layers']  # T5 only: decoder layers
  m.num_heads = size['num_heads']        # attention heads
  m.head_dim = size['d_model'] // size['num_heads']  # per-head width (T5 d_kv)
  # T5's gated MLP has three matrices: 2/3 of the width keeps the MLP's parameter count
  # (T5 v1.1-base: 3072 -> 2048), rounded to a multiple of 64.
  m.d_ff = int(round(size['d_ff'] * 2 / 3 / 64)) * 64 if fam.gated_mlp else size['d_ff']
  m.max_len = fam.max_len                # learned position table (bert, gpt)
  m.type_vocab_size = 2                  # BERT token types
  m.activation = fam.activation         # gelu | gelu_tanh | relu | gated-gelu
  m.tie_embeddings = fam.tie_embeddings  # T5: True = v1.0 (tied, logits scaled by d_model**-0.5), False = v1.1 (untied lm_head)
  m.relative_buckets = 32                # T5 relative position buckets
  m.relative_max_distance = 128          # T5 relative position max distance
  m.layer_norm_eps = fam.layer_norm_eps
  m.init_std = 0.02                      # BERT/GPT normal init std (T5 uses its fan-in scaled init)
  m.use_pooler = False                   # BERT: create the [CLS] pooler (dense + tanh) even when no head uses it
  m.head = 'lm'                          # lm (pretraining head) | none (hidden states) | sequence_classification | token_classification | question_answering
  m.num_classes = 2                      # classification heads: labels
  m.pooling = fam.pooling                # sequence classification: cls | last | mean
  m.dropout_rate = 0.1                   # residual / embedding dropout
  m.attention_dropout_rate = 0.1         # dropout on attention probabilities
  m.dtype = 'float32'                    # compute dtype: float32 | bfloat16 (base and larger: bfloat16, _fit_defaults)
  m.param_dtype = 'float32'              # master weights
  m.scan_layers = False                  # nn.scan over layers (compile time flat in depth; base and larger: True)
  m.remat = 'none'                       # none | full | dots (keep x.W outputs, recompute attention scores; base and larger)
  m.attention_impl = 'auto'              # auto | xla | cudnn (jax.nn.dot_product_attention) | einsum (plain path)
  m.prefix_length = 0                    # prefix tuning: learned key/value slots per self-attention layer (0 = off)
  m.prefix_hidden = 0                    # prefix tuning: width of the reparameterisation MLP (0 = direct prefixes)
  m.adapter_dim = 0                      # bottleneck adapters after attention and MLP: hidden width (0 = off)

  # --- data ----------------------------------------------------------------
  c.data = d = ml_collections.ConfigDict()
  d.corpus = 'news'                      # news | shakespeare | tfds:<name>[/<config>] | files (below)
  d.train_files = ''                     # corpus files: comma-separated globs of .txt/.jsonl/.csv/.tsv[.gz] (data/local_files.py)
  d.validation_files = ''                # corpus files: the evaluation split, as train_files
  d.data_dir = ''                        # TFDS data dir ('' = $PTLM_DATA_DIR or ~/.cache/ptlm_jax)
  d.download = False                     # allow TFDS catalog downloads (offline corpora never need it)
  d.network_probe = 'storage.googleapis.com:443'  # host:port tried (3 s timeout) before a TFDS download
  d.text_key = 'text'                    # feature holding the text in catalog datasets (files: the JSONL field / CSV column)
  d.train_split = 'train'
  d.eval_split = 'validation'
  d.sp_vocab_size = size['sp_vocab']     # SentencePiece pieces (without sentinels)
  d.tokenizer_path = ''                  # existing .model file ('' = train/cache one for the corpus)
  d.sp_model_type = 'unigram'            # SentencePiece algorithm when training one: unigram | bpe
  d.sp_train_chars = 20_000_000          # tokenizer training text: at most this many characters of the train split
  d.seq_len = _SEQ_LEN[variant]          # packed row length (raw length for span corruption is derived)
  # T5 corrupts chunks of the concatenated stream (reduce_concat_tokens + split_tokens).
  d.pack_mode = fam.pack_mode            # pack (multi-document rows + segment ids) | chunk (concatenate and split)
  d.shuffle = True                       # shuffle documents each epoch
  d.shuffle_seed = 0                     # document order seed (same seed, same batches)
  d.prefetch = 2                         # batches prepared ahead on a background thread
  d.mixture = ''                         # pretraining mixture 'news:0.7,shakespeare:0.2,files:0.1' (corpus:weight; '' = data.corpus alone)
  # Fine-tuning: N > 0 batches rows of similar length and cuts each batch to the smallest of N
  # widths up to seq_len that holds it (HF group_by_length; N shapes compile); 0 = seq_len.
  d.length_buckets = 0

  # --- objective -----------------------------------------------------------
  c.objective = o = ml_collections.ConfigDict()
  o.name = fam.objectives[0]             # mlm | causal_lm | span_corruption | prefix_lm | ul2
  o.mask_rate = 0.15                     # MLM: fraction of real tokens chosen
  o.mask_count_mode = 'fixed'            # MLM: fixed (BERT per-row count) | bernoulli (RoBERTa)
  o.max_predictions = 0                  # MLM: cap on chosen tokens per row (fixed mode); 0 = follows seq_len (max_predictions())
  o.whole_word = False                   # MLM: mask whole words (SentencePiece word starts)
  o.static_masking = False               # MLM: masks fixed per example (original BERT)
  o.dupe_factor = 1                      # MLM static masking: distinct masks per row (BERT's dupe_factor)
  o.predict_positions = 'auto'           # MLM: logits only at chosen positions: auto (on in fixed mode) | on | off
  o.mask_token_rate = 0.8                # MLM: fraction of chosen tokens replaced by [MASK]
  o.random_token_rate = 0.1              # MLM: fraction replaced by a random ordinary piece (rest kept)
  o.noise_density = 0.15                 # span corruption: fraction of noise tokens
  o.mean_span_length = 3.0               # span corruption: mean noise span length
  o.random_roll = False                  # span corruption: roll the noise mask (T5's random_roll; T5's span_corruption does not)
  o.targets_length = 0                   # encoder-decoder target length (0 = derived)
  o.ul2_mixture = 'R:3:0.15,R:8:0.15,S,X:3:0.5,X:8:0.5,X:64:0.15,X:64:0.5'  # UL2 denoisers: R|X:mean:density or S, each [=weight]
  o.ul2_paradigm_tokens = True           # UL2: prepend the [NLU] / [NLG] / [S2S] paradigm token
  o.z_loss = 0.0                         # T5X z-loss coefficient (1e-4 in T5X)
  o.label_smoothing = 0.0

  # --- optim ---------------------------------------------------------------
  c.optim = p = ml_collections.ConfigDict()
  p.optimizer = fam.optimizer            # adamw | adafactor | sgd
  # Peak learning rate.  T5's Adafactor scales each update by the parameter's RMS, so it
  # takes T5's 1e-2 (the peak of its inverse-square-root schedule) at every size.
  p.lr = fam.fixed_lr or (1e-3 if variant == 'tiny' else 1e-4)
  p.warmup_steps = 100                   # linear warmup from 0 to lr
  p.decay = fam.decay                    # linear | cosine | rsqrt | constant
  p.final_lr_frac = 0.0                  # floor as a fraction of lr at the end of decay
  p.b1 = 0.9
  p.b2 = fam.b2
  p.eps = fam.eps
  p.weight_decay = fam.weight_decay      # decoupled; skips biases and norm scales (T5: none)
  p.momentum = 0.9                       # sgd only
  p.grad_clip_norm = 1.0                 # global-norm clipping (0 = off)
  p.microbatches = 1                     # gradient accumulation steps per update

  # --- parallel ------------------------------------------------------------
  c.parallel = q = ml_collections.ConfigDict()
  q.mode = 'pmap'                        # pmap (data parallel) | mesh (jit + NamedSharding; base and larger: mesh, fsdp = all devices)
  q.mesh_data = -1                       # mesh axis sizes; -1 = all remaining devices
  q.mesh_fsdp = 1
  q.mesh_tensor = 1
  q.coordinator_address = ''             # multi-host: host:port of process 0 ('' = env / auto)
  q.num_processes = 0                    # multi-host: 0 = from environment
  q.process_id = -1                      # multi-host: -1 = from environment
  q.distributed = 'auto'                 # auto | on | off: jax.distributed.initialize (auto: coordinator set or cluster env seen)
  q.num_devices = 0                      # use only the first N devices (0 = all; single-process only)

  # --- train ---------------------------------------------------------------
  c.train = t = ml_collections.ConfigDict()
  t.steps = 200 if variant == 'tiny' else 10_000  # optimizer updates
  t.batch_size = 32                      # global batch (rows) per update
  t.eval_every = 100                     # steps between evaluations
  t.eval_steps = 10                      # batches per evaluation
  t.log_every = 10                       # steps between metric writes
  t.checkpoint_every = 500               # steps between checkpoints
  t.keep_checkpoints = 3                 # last N kept (plus the best and the final)
  t.seed = 0                             # parameter init and objective rng
  t.nan_policy = 'stop'                  # stop | skip (on a NaN/Inf loss)
  t.preemption_timeout = 300             # seconds a preemption save may take, then exit 2
  t.profile_steps = ''                   # 'start:end' to write a profiler trace
  t.keep_best_by = 'loss'                # eval metric whose best checkpoint is always kept: loss | accuracy | '' (none)
  t.peak_flops = 0.0                     # per-device peak FLOP/s for MFU (0 = from the device table; CPU: unknown)
  t.loss_chunk_tokens = 1024             # LM pretraining: target tokens per chunk of the fused vocab projection + loss (losses.projected_cross_entropy); 0 = full logits, then the loss

  # --- task (fine-tuning; configs/finetune/*.py set it) ---------------------
  c.task = k = ml_collections.ConfigDict()
  k.name = ''                            # '' | classification | ner | qa | summarization | translation
  k.dataset = ''                         # TFDS name: rotten_tomatoes, squad, conll2003, ... ('' with train_file)
  k.train_file = ''                      # your own data instead of a dataset: a .csv / .tsv / .jsonl file (data/local_files.py)
  k.validation_file = ''                 # with train_file: the validation rows (data.eval_split)
  k.test_file = ''                       # with train_file: optional test rows (evaluated with --config.data.eval_split=test)
  k.label_names = ''                     # comma-separated classes / tags in id order ('' = the train file's, sorted)
  k.format = 'head'                      # head (task head on the backbone) | text (T5 text-to-text, GPT continuation)
  k.input_fields = 'text'                # comma-separated input features; two make a pair ('question,context')
  k.target_field = 'label'               # label / tag sequence / answers / target text feature
  k.metric = 'auto'                      # auto (the task's own) | f1 | macro_f1 | entity_f1 | squad | rouge | bleu
  k.prompt = ''                          # text format: input prefix ('sst2 sentence: ', 'summarize: ')
  k.target_prompt = ''                   # text format, GPT: text between input and target (' TL;DR:')
  k.label_words = ''                     # text-format classification: target word per class ('negative,positive')
  k.target_length = 32                   # text format: target tokens T, EOS included (GPT: within data.seq_len)
  k.doc_stride = 64                      # qa: pieces between the starts of a context's windows
  k.max_query_length = 32                # qa: question pieces kept
  k.max_answer_length = 30               # qa: longest decoded answer (pieces)
  k.n_best = 20                          # qa: start and end candidates per window
  k.eval_examples = 0                    # task metrics on the first N validation examples (0 = all)

  # --- peft ----------------------------------------------------------------
  c.peft = f = ml_collections.ConfigDict()
  f.method = 'none'                      # none | lora | prefix | adapter (which params train: see peft.py)
  f.rules = ''                           # ordered 'regex=action;...', first match wins (action: train | freeze | lr*X)
  f.freeze_embeddings = False            # freeze token / position / type embeddings (and BERT's embedding norm)
  f.freeze_layers = 0                    # freeze the bottom k layers of every stack
  f.layerwise_lr_decay = 1.0             # LLRD: lr x decay^(depth from the top); 1 = off
  f.lora_rank = 8                        # LoRA rank r
  f.lora_alpha = 8.0                     # LoRA alpha: the update is (alpha / r) B A
  f.lora_targets = '(query|value)/kernel$'  # regex on param paths of the kernels LoRA adapts

  # --- init ----------------------------------------------------------------
  c.init = i = ml_collections.ConfigDict()
  i.source = ''                          # '' (random) | ptlm_jax workdir | ptlm_jax model dir | HF checkpoint dir
  i.step = 0                             # workdir source: checkpoint step to read (0 = latest)
  if variant == 'base':  # the paper's pretraining recipe (families.py)
    for field, value in fam.base_recipe:
      group, name = field.split('.')
      c[group][name] = value
    _fit_defaults(c)
  return c


def _fit_defaults(c: ml_collections.ConfigDict) -> None:
  """What base and the published sizes above it (`reference_config`) need to fit a device.

  bfloat16 compute on float32 master weights and moments; layers scanned (compile time
  flat in depth) with the 'dots' remat policy (the [B, H, T, S] attention scores are
  recomputed, not kept); the state sharded over every device (mesh, fsdp = all: ZeRO-3)
  instead of pmap's full copy per device (GPT-2 1.5B's AdamW state alone: 24 GB).
  `--config.parallel.mode=pmap` still runs them, replicated.
  """
  c.model.update(dtype='bfloat16', param_dtype='float32', scan_layers=True, remat='dots')
  c.parallel.update(mode='mesh', mesh_data=1, mesh_fsdp=-1, mesh_tensor=1)


def max_predictions(config: ml_collections.ConfigDict) -> int:
  """MLM predictions per row: `objective.max_predictions`, or (0) one that follows seq_len.

  BERT's README sets max_predictions_per_seq to about seq_len x mask rate: 20 at 128, 80
  at 512.  Rounding seq_len x rate up to a multiple of 4 gives exactly those, and the
  cap then never binds below the rate (BERT's 20 at 512 would mask 3.9%, not 15%).
  """
  o = config.objective
  if o.max_predictions:
    return o.max_predictions
  return max(4, 4 * math.ceil(config.data.seq_len * o.mask_rate / 4 - 1e-9))


def reference_config(family: str, sizes: dict) -> ml_collections.ConfigDict:
  """A published model size on top of the `base` variant (configs/*.py REFERENCE tables).

  `sizes` are model fields plus optionally `seq_len`; the tokenizer size follows the
  released vocabulary (pieces = vocab_size - sentinels), so the config validates and the
  parameter count equals the published model's.
  """
  c = base_config(family, 'base')
  sizes = dict(sizes)
  if 'seq_len' in sizes:
    c.data.seq_len = sizes.pop('seq_len')
  c.model.update(sizes)
  c.data.sp_vocab_size = c.model.vocab_size - NUM_SENTINELS
  return c


# ---------------------------------------------------------------------------
# Validation.  Each check names the field, the value and what is allowed.

def _known_corpus(name: str) -> bool:
  return name in ('news', 'shakespeare', 'files') or name.startswith('tfds:')


def mixture(config) -> list[tuple[str, float]]:
  """data.mixture as [(corpus, weight)], weights summing to 1; [] when it is empty."""
  text = str(config.data.get('mixture', '') or '').strip()
  if not text:
    return []
  allowed = ("'corpus:weight,...' with corpora news | shakespeare | files | tfds:<name> "
             "and weights > 0, e.g. 'news:0.7,shakespeare:0.2,files:0.1'")
  out = []
  for part in text.split(','):
    name, _, weight = part.strip().rpartition(':')
    try:
      value = float(weight)
    except ValueError:
      value = -1.0
    _check(_known_corpus(name), 'data.mixture', text, allowed + f' (unknown source {name!r})')
    _check(value > 0 and math.isfinite(value), 'data.mixture', text,
           allowed + f' (bad weight {weight!r} for {name})')
    _check(name not in [n for n, _ in out], 'data.mixture', text,
           allowed + f' ({name} twice)')
    if name == 'files':
      _check(bool(str(config.data.train_files).strip(', ')), 'data.train_files',
             config.data.train_files, "glob patterns of your files for 'files' in data.mixture")
    out.append((name, value))
  total = sum(w for _, w in out)
  return [(n, w / total) for n, w in out]


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
  if not ok:
    raise ConfigError(field, value, allowed)


def _one_of(config, field: str, allowed: Iterable[str]) -> None:
  allowed = tuple(allowed)
  value = _get(config, field)
  _check(value in allowed, field, value, f'one of {allowed}')


def _positive(config, field: str, strict: bool = True) -> None:
  value = _get(config, field)
  ok = isinstance(value, (int, float)) and (value > 0 if strict else value >= 0)
  _check(ok, field, value, 'a number > 0' if strict else 'a number >= 0')


def _get(config, field: str) -> Any:
  node = config
  for part in field.split('.'):
    node = node[part]
  return node


_MESH_FIELD = 'parallel.(mesh_data, mesh_fsdp, mesh_tensor)'


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) mesh axis sizes, the one -1 resolved; ConfigError unless they fill the devices."""
  q = config.parallel
  sizes = [q.mesh_data, q.mesh_fsdp, q.mesh_tensor]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    _check(num_devices % known == 0, _MESH_FIELD, tuple(sizes),
           f'fixed axis sizes that divide the device count ({num_devices})')
    sizes[sizes.index(-1)] = num_devices // known
  _check(math.prod(sizes) == num_devices, _MESH_FIELD, tuple(sizes),
         f'sizes whose product is the device count ({num_devices})')
  return tuple(sizes)


TASK_NAMES = ('classification', 'ner', 'qa', 'summarization', 'translation')
# What each task can be measured with ('auto' picks the first).
TASK_METRICS = {'classification': ('f1', 'macro_f1'), 'ner': ('entity_f1',), 'qa': ('squad',),
                'summarization': ('rouge', 'bleu'), 'translation': ('bleu', 'rouge')}
# The model head each (task, format) trains.
TASK_HEADS = {('classification', 'head'): 'sequence_classification',
              ('ner', 'head'): 'token_classification', ('qa', 'head'): 'question_answering',
              ('classification', 'text'): 'lm', ('summarization', 'text'): 'lm',
              ('translation', 'text'): 'lm'}


def validate_task(config: ml_collections.ConfigDict) -> None:
  """The `task` group and how it fits the model (no data is read here)."""
  k, m = config.task, config.model
  if not k.name:
    return
  _one_of(config, 'task.name', TASK_NAMES)
  _one_of(config, 'task.format', ('head', 'text'))
  formats = [f for (n, f) in TASK_HEADS if n == k.name]
  _check(k.format in formats, 'task.format', k.format, f'one of {formats} for task {k.name}')
  _check(k.format == 'head' or not families.get(m.family).bidirectional, 'task.format', k.format,
         "'head' for BERT (an encoder has no text output; use GPT or T5)")
  head = TASK_HEADS[(k.name, k.format)]
  _check(m.head == head, 'model.head', m.head, f'{head!r} for task {k.name} in {k.format} format')
  _check(bool(k.dataset or k.train_file), 'task.train_file', k.train_file,
         'your training file (.csv, .tsv or .jsonl), or task.dataset (a TFDS name)')
  _check(not (k.dataset and k.train_file), 'task.train_file', k.train_file,
         f"'' with task.dataset={k.dataset!r} set (one source of data)")
  if k.train_file:
    _check(bool(k.validation_file), 'task.validation_file', k.validation_file,
           'a .csv / .tsv / .jsonl file with task.train_file')
  _check(bool(k.input_fields.strip(',')) and len(k.input_fields.split(',')) <= 2,
         'task.input_fields', k.input_fields, 'one feature name, or two for a pair')
  _check(bool(k.target_field), 'task.target_field', k.target_field, 'a feature name')
  _one_of(config, 'task.metric', ('auto',) + TASK_METRICS[k.name])
  for field in ('task.target_length', 'task.doc_stride', 'task.max_query_length',
                'task.max_answer_length', 'task.n_best'):
    _positive(config, field)
  _positive(config, 'task.eval_examples', strict=False)
  if k.name == 'classification' and k.format == 'text':
    words = [w.strip() for w in k.label_words.split(',')]
    _check(len(words) == m.num_classes and all(words), 'task.label_words', k.label_words,
           f'{m.num_classes} comma-separated words (model.num_classes), one per class')
  if k.format == 'text' and families.get(m.family).kind == 'decoder':
    _check(k.target_length + 8 <= config.data.seq_len, 'task.target_length', k.target_length,
           f'<= data.seq_len - 8 ({config.data.seq_len - 8}): GPT rows hold input and target')
  if k.name == 'qa':
    _check(k.max_query_length + 8 <= config.data.seq_len, 'task.max_query_length',
           k.max_query_length, f'<= data.seq_len - 8 ({config.data.seq_len - 8}), to leave '
           'room for the context')


MODEL_HEADS = ('lm', 'none', 'sequence_classification', 'token_classification',
               'question_answering')


def validate_model(m: ml_collections.ConfigDict) -> None:
  """Checks the `model` group alone (also used for configs read from checkpoints)."""
  config = ml_collections.ConfigDict({'model': m})
  _one_of(config, 'model.family', FAMILIES)
  for field in ('model.d_model', 'model.num_layers', 'model.num_heads', 'model.head_dim',
                'model.d_ff', 'model.vocab_size', 'model.max_len', 'model.type_vocab_size',
                'model.relative_buckets', 'model.relative_max_distance', 'model.num_classes',
                'model.layer_norm_eps', 'model.init_std'):
    _positive(config, field)
  if families.get(m.family).encoder_decoder:
    _positive(config, 'model.num_decoder_layers')
  _one_of(config, 'model.activation', ('gelu', 'gelu_tanh', 'relu', 'gated-gelu'))
  _one_of(config, 'model.dtype', ('float32', 'bfloat16'))
  _one_of(config, 'model.param_dtype', ('float32', 'bfloat16'))
  _one_of(config, 'model.remat', ('none', 'full', 'dots'))
  _one_of(config, 'model.attention_impl', ('auto', 'xla', 'cudnn', 'einsum'))
  _one_of(config, 'model.head', MODEL_HEADS)
  _one_of(config, 'model.pooling', ('cls', 'last', 'mean'))
  for field in ('model.dropout_rate', 'model.attention_dropout_rate'):
    v = _get(config, field)
    _check(0.0 <= v < 1.0, field, v, 'a rate in [0, 1)')
  for field in ('model.prefix_length', 'model.prefix_hidden', 'model.adapter_dim'):
    v = m.get(field.split('.')[1], 0)  # absent in configs saved before these fields existed
    _check(isinstance(v, int) and v >= 0, field, v, 'an integer >= 0 (0 = off)')


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first invalid field.  Cheap: no jax compilation."""
  m, d, o, p, q, t = (config.model, config.data, config.objective, config.optim,
                      config.parallel, config.train)
  validate_model(m)
  min_vocab = d.sp_vocab_size + NUM_SENTINELS
  _check(m.vocab_size >= min_vocab, 'model.vocab_size', m.vocab_size,
         f'>= data.sp_vocab_size + {NUM_SENTINELS} sentinels = {min_vocab}')

  _positive(config, 'data.seq_len')
  _positive(config, 'data.sp_vocab_size')
  _check(d.sp_vocab_size > 16, 'data.sp_vocab_size', d.sp_vocab_size, 'an integer > 16')
  if not families.get(m.family).encoder_decoder:  # learned positions
    _check(d.seq_len <= m.max_len, 'data.seq_len', d.seq_len,
           f'<= model.max_len ({m.max_len}), the position table size')
  _one_of(config, 'data.pack_mode', ('pack', 'chunk'))
  _check(d.corpus in ('news', 'shakespeare', 'files') or str(d.corpus).startswith('tfds:'),
         'data.corpus', d.corpus, "'news', 'shakespeare', 'files' or 'tfds:<name>[/<config>]'")
  if d.corpus == 'files':
    for field in ('data.train_files', 'data.validation_files'):
      _check(bool(str(_get(config, field)).strip(', ')), field, _get(config, field),
             "glob patterns of your files with data.corpus='files', e.g. 'data/*.txt'")
  _positive(config, 'data.prefetch', strict=False)
  mixture(config)  # a bad weight or source is a ConfigError
  if d.get('length_buckets'):  # absent in hand-made and older configs
    _check(isinstance(d.length_buckets, int) and 0 < d.length_buckets <= d.seq_len,
           'data.length_buckets', d.length_buckets, f'0 (off) or 1..data.seq_len ({d.seq_len})')
    _check(bool(config.task.name), 'data.length_buckets', d.length_buckets,
           '0 for pretraining (packed rows are full); it applies to fine-tuning (task.name)')
  _one_of(config, 'data.sp_model_type', ('unigram', 'bpe'))
  _positive(config, 'data.sp_train_chars')
  _check(str(d.network_probe).rpartition(':')[2].isdigit(), 'data.network_probe',
         d.network_probe, "'host:port', e.g. 'storage.googleapis.com:443'")

  _one_of(config, 'objective.name', families.get(m.family).objectives)
  for field in ('objective.mask_rate', 'objective.noise_density'):
    v = _get(config, field)
    _check(0.0 < v < 1.0, field, v, 'a rate in the open interval (0, 1)')
  _one_of(config, 'objective.mask_count_mode', ('fixed', 'bernoulli'))
  _positive(config, 'objective.max_predictions', strict=False)
  _check(o.mean_span_length >= 1.0, 'objective.mean_span_length', o.mean_span_length,
         'a number >= 1')
  _positive(config, 'objective.targets_length', strict=False)
  _check(isinstance(o.dupe_factor, int) and o.dupe_factor >= 1, 'objective.dupe_factor',
         o.dupe_factor, 'an integer >= 1')
  _one_of(config, 'objective.predict_positions', ('auto', 'on', 'off'))
  for field in ('objective.mask_token_rate', 'objective.random_token_rate'):
    v = _get(config, field)
    _check(0.0 <= v <= 1.0, field, v, 'a rate in [0, 1]')
  _check(o.mask_token_rate + o.random_token_rate <= 1.0, 'objective.random_token_rate',
         o.random_token_rate, f'<= 1 - objective.mask_token_rate ({1 - o.mask_token_rate:g})')
  _check(isinstance(o.max_predictions, int), 'objective.max_predictions', o.max_predictions,
         'an integer >= 0 (0 = follows data.seq_len)')
  _positive(config, 'objective.z_loss', strict=False)
  _check(0.0 <= o.label_smoothing < 1.0, 'objective.label_smoothing', o.label_smoothing,
         'a rate in [0, 1)')

  _one_of(config, 'optim.optimizer', ('adamw', 'adafactor', 'sgd'))
  _positive(config, 'optim.lr')
  _positive(config, 'optim.warmup_steps', strict=False)
  _one_of(config, 'optim.decay', ('linear', 'cosine', 'rsqrt', 'constant'))
  _check(0.0 <= p.final_lr_frac <= 1.0, 'optim.final_lr_frac', p.final_lr_frac, 'a fraction in [0, 1]')
  _positive(config, 'optim.weight_decay', strict=False)
  _positive(config, 'optim.grad_clip_norm', strict=False)
  _check(isinstance(p.microbatches, int) and p.microbatches >= 1, 'optim.microbatches',
         p.microbatches, 'an integer >= 1')

  _one_of(config, 'parallel.mode', ('pmap', 'mesh'))
  for field in ('parallel.mesh_data', 'parallel.mesh_fsdp', 'parallel.mesh_tensor'):
    v = _get(config, field)
    _check(isinstance(v, int) and (v >= 1 or v == -1), field, v, 'an integer >= 1, or -1 (the remaining devices)')
  mesh = (q.mesh_data, q.mesh_fsdp, q.mesh_tensor)
  _check(mesh.count(-1) <= 1, _MESH_FIELD, mesh, 'at most one axis set to -1')
  _one_of(config, 'parallel.distributed', ('auto', 'on', 'off'))
  _check(isinstance(q.num_devices, int) and q.num_devices >= 0, 'parallel.num_devices',
         q.num_devices, 'an integer >= 0 (0 = all devices)')
  _check(isinstance(q.num_processes, int) and q.num_processes >= 0, 'parallel.num_processes',
         q.num_processes, 'an integer >= 0 (0 = from the environment)')
  _check(isinstance(t.steps, int) and t.steps >= 0, 'train.steps', t.steps, 'an integer >= 0')
  _positive(config, 'train.batch_size')
  for field in ('train.eval_every', 'train.log_every', 'train.checkpoint_every',
                'train.keep_checkpoints'):
    _positive(config, field)
  _positive(config, 'train.eval_steps', strict=False)
  _one_of(config, 'train.nan_policy', ('stop', 'skip'))
  _positive(config, 'train.preemption_timeout')
  _one_of(config, 'train.keep_best_by', ('loss', 'accuracy', ''))
  _positive(config, 'train.peak_flops', strict=False)
  _check(isinstance(t.loss_chunk_tokens, int) and t.loss_chunk_tokens >= 0, 'train.loss_chunk_tokens',
         t.loss_chunk_tokens, 'an integer >= 0 (0 = no fused LM head)')
  _check(t.profile_steps == '' or re.fullmatch(r'\d+:\d+', str(t.profile_steps)) is not None
         and int(t.profile_steps.split(':')[0]) < int(t.profile_steps.split(':')[1]),
         'train.profile_steps', t.profile_steps, "'' or 'start:end' with start < end (steps)")
  _check(t.batch_size % p.microbatches == 0, 'train.batch_size', t.batch_size,
         f'a multiple of optim.microbatches ({p.microbatches})')
  validate_task(config)
  if num_devices is not None:
    if q.num_devices:
      _check(q.num_devices <= num_devices, 'parallel.num_devices', q.num_devices,
             f'at most the {num_devices} devices present')
      num_devices = q.num_devices
    if q.mode == 'mesh':
      data, fsdp, _ = mesh_shape(config, num_devices)
      per_update = data * fsdp * p.microbatches
      _check(t.batch_size % per_update == 0, 'train.batch_size', t.batch_size,
             f'a multiple of mesh data x fsdp x microbatches ({data} x {fsdp} x {p.microbatches} '
             f'= {per_update})')
    else:
      per_update = num_devices * p.microbatches
      _check(t.batch_size % per_update == 0, 'train.batch_size', t.batch_size,
             f'a multiple of devices x microbatches ({num_devices} x {p.microbatches} = {per_update})')

  f = config.peft
  _one_of(config, 'peft.method', ('none', 'lora', 'prefix', 'adapter'))
  needs = {'prefix': 'model.prefix_length', 'adapter': 'model.adapter_dim'}.get(f.method)
  if needs:
    _check(_get(config, needs) > 0, needs, _get(config, needs), f'> 0 with peft.method={f.method}')
  _check(isinstance(f.freeze_layers, int) and f.freeze_layers >= 0, 'peft.freeze_layers',
         f.freeze_layers, 'an integer >= 0')
  _check(0.0 < f.layerwise_lr_decay <= 1.0, 'peft.layerwise_lr_decay', f.layerwise_lr_decay,
         'a factor in (0, 1] (1 = off)')
  _check(isinstance(f.lora_rank, int) and f.lora_rank >= 1, 'peft.lora_rank', f.lora_rank,
         'an integer >= 1')
  _positive(config, 'peft.lora_alpha')
  _check(isinstance(config.init.step, int) and config.init.step >= 0, 'init.step',
         config.init.step, 'an integer >= 0 (0 = the latest checkpoint)')
