"""Task metrics after each evaluation: predictions on the validation set, then task_metrics.

`make_extra_eval(...)` returns the loop's `Components.extra_eval(params) -> scalars`.
It runs the model (jitted, deterministic) over the validation features in fixed-size
batches on the host's devices and reports, prefixed `task_` so that they sit beside the
loop's own eval loss and accuracy:

  classification, head   argmax of the class logits -> task_accuracy, task_f1 | task_macro_f1
  classification, text   rank classification: each class's label word is scored as the
                         target (summed log-likelihood) and the best one is the prediction,
                         as T5X's rank classification; so an answer that is not a label
                         word can never be produced -> the same metrics
  ner                    argmax tag of each word's first sub-word -> task_entity_f1,
                         task_precision, task_recall
  qa                     n-best span decoding over the windows (data/task_qa.py) ->
                         task_exact_match, task_f1
  summarization,         greedy decoding of task.target_length tokens through
  translation            ptlm_jax.generate -> task_rouge1/2/L or task_bleu

Every process computes the same numbers from the full params (the validation sets are
small); `generate_fn` can be replaced (tests pass a plain greedy decoder).

Each evaluation also keeps one record per validation example (`TaskEvaluator.records()`),
which the loop writes to `<workdir>/inference_eval/<split>-<step>.jsonl`, as T5X's
inference_eval: {"prediction", "label"} for classification (class ids) and NER (tags per
word), {"prediction", "references"} for QA and generation (text).  Paired statistics
over runs (experiments/compare_objectives) read these instead of predicting again.

Legend: B batch, L row length, T target length, C classes, G generated tokens.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ptlm_jax import config_lib, errors, families
from ptlm_jax.finetune import data as tasks, metrics as task_metrics, qa as task_qa


def _batches(features: dict[str, np.ndarray], batch_size: int):
  return tasks.TaskIterator(features, global_batch=batch_size, shuffle=False, infinite=False)


def _predict_fn(model, objective) -> Callable:
  @jax.jit
  def predict(params, batch):
    inputs, targets, weights = objective(batch, None)
    return model.apply({'params': params}, **inputs, deterministic=True), targets, weights
  return predict


def _outputs(predict, params, features, batch_size: int, rows: int):
  """Model outputs over all feature rows (padding rows dropped), as numpy."""
  chunks = [jax.device_get(predict(params, b)) for b in _batches(features, batch_size)]
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:rows], *chunks)


def library_generate(model, params, prompt_BxL, lengths_B, max_new_tokens: int, *,
                     eos_id: int = 1, pad_id: int = 0) -> np.ndarray:
  """Greedy decoding through ptlm_jax.generate (the text generation stage)."""
  try:
    from ptlm_jax.decoding import generate  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError('summarization / translation metrics need ptlm_jax.generate (text '
                    'generation), which this checkout does not have') from e
  options = generate.Options(strategy='greedy', max_new_tokens=max_new_tokens, eos_id=eos_id,
                             pad_id=pad_id)
  return np.asarray(generate.generate(model, params, prompt_BxL, lengths_B, options).tokens_BxG)


def _texts(tokenizer, tokens_BxG) -> list[str]:
  out, eos = [], tokenizer.vocab_info.eos_id
  for row in np.asarray(tokens_BxG).tolist():
    row = row[:row.index(eos)] if eos in row else row
    out.append(tokenizer.decode(row).strip())
  return out


class TaskEvaluator:
  """extra_eval(params) -> {'task_<metric>': value}; `records()`: its per-example outputs."""

  def __init__(self, run: Callable[[Any], tuple[dict, list[dict]]]):
    self._run, self._records = run, []

  def __call__(self, params) -> dict[str, float]:
    scores, self._records = self._run(_one_device_if_replicated(params))
    return {f'task_{k}': float(v) for k, v in scores.items()}

  def records(self) -> list[dict]:
    """One JSON-able record per validation example, from the latest call."""
    return self._records


def make_extra_eval(config, model, objective, data: tasks.TaskData, tokenizer, *,
                    generate_fn: Callable | None = None) -> TaskEvaluator:
  """extra_eval(params) -> {'task_<metric>': value} on `data` (see the module docstring).

  generate_fn(model, params, prompt_BxL, lengths_B, max_new_tokens) -> tokens_BxG; None =
  `library_generate`, looked up when it runs.
  """
  t, batch_size, rows = config.task, config.train.batch_size, len(data.examples)
  predict = _predict_fn(model, objective)
  num_rows = len(data.features['tokens'])
  metric = t.metric if t.metric != 'auto' else config_metric(config)
  info = tokenizer.vocab_info

  def classification(params):
    if t.format == 'head':
      logits_NxC, _, _ = _outputs(predict, params, data.features, batch_size, num_rows)
      predictions = logits_NxC.argmax(-1)
    else:
      predictions = rank_classification(params)
    labels = [ex[t.target_field] for ex in data.examples]
    scores = task_metrics.classification(
        predictions, labels, config.model.num_classes,
        average={'f1': 'binary', 'macro_f1': 'macro'}[metric])
    return scores, [{'prediction': int(p), 'label': int(y)} for p, y in zip(predictions, labels)]

  def rank_classification(params):
    scores_NxC = []
    for word in tasks.label_words(config):
      features = tasks.encode_text(config, tokenizer, data.examples,
                                   targets=[word] * rows).features
      logits, targets, weights = _outputs(predict, params, features, batch_size, rows)
      log_p = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
      target_log_p = np.take_along_axis(np.asarray(log_p), targets[..., None], -1)[..., 0]
      scores_NxC.append((target_log_p * weights).sum(-1))
    return np.stack(scores_NxC, axis=1).argmax(-1)

  def ner(params):
    names = tasks.label_names(config)
    logits_NxLxC, _, _ = _outputs(predict, params, data.features, batch_size, num_rows)
    true = [[names[k] for k in ex[t.target_field]] for ex in data.examples]
    predicted = word_tags(data, logits_NxLxC.argmax(-1), names)
    return (task_metrics.entity_f1(true, predicted),
            [{'prediction': p, 'label': y} for p, y in zip(predicted, true)])

  def qa(params):
    (start_FxL, end_FxL), _, _ = _outputs(predict, params, data.features, batch_size, num_rows)
    answers = task_qa.decode_answers(data, start_FxL, end_FxL, n_best=t.n_best,
                                     max_answer_length=t.max_answer_length)
    references = [ex['answers']['text'] or [''] for ex in data.examples]
    return task_metrics.squad(answers, references), _text_records(answers, references)

  def generation(params):
    features, outputs = data.features, []
    if families.get(config.model.family).encoder_decoder:
      lengths_N = features['segment_ids'].sum(axis=1)
      prompts_NxL = features['tokens']
    else:
      lengths_N = data.host['prompt_length']
      keep_NxL = np.arange(features['tokens'].shape[1])[None, :] < lengths_N[:, None]
      prompts_NxL = (features['tokens'] * keep_NxL)[:, :int(lengths_N.max())]
    for start in range(0, rows, batch_size):
      prompt_BxL = prompts_NxL[start:start + batch_size]
      lengths_B = lengths_N[start:start + batch_size]
      have = len(lengths_B)
      if have < batch_size:  # one compiled shape: pad with copies of the first row
        prompt_BxL = np.concatenate([prompt_BxL, np.repeat(prompt_BxL[:1], batch_size - have, 0)])
        lengths_B = np.concatenate([lengths_B, np.repeat(lengths_B[:1], batch_size - have)])
      tokens_BxG = (generate_fn or functools.partial(
          library_generate, eos_id=info.eos_id, pad_id=info.pad_id))(
              model, params, prompt_BxL, lengths_B, t.target_length)
      outputs += _texts(tokenizer, tokens_BxG)[:have]
    references = data.host['references']
    scores = (task_metrics.rouge if metric == 'rouge' else task_metrics.bleu)(outputs, references)
    return scores, _text_records(outputs, references)

  return TaskEvaluator({'classification': classification, 'ner': ner, 'qa': qa,
                        'summarization': generation, 'translation': generation}[t.name])


def _text_records(outputs: list[str], references: list) -> list[dict]:
  as_list = lambda r: list(r) if isinstance(r, (list, tuple)) else [r]
  return [{'prediction': o, 'references': as_list(r)} for o, r in zip(outputs, references)]


def word_tags(data: tasks.TaskData, best_NxL: np.ndarray, names: list[str]) -> list[list[str]]:
  """Each word's predicted tag: the class of its first sub-word ('O' if it was cut off)."""
  word_index, out = data.host['word_index'], []
  for i, ex in enumerate(data.examples):
    tags = ['O'] * len(ex['tokens'])
    for position in np.nonzero(word_index[i] >= 0)[0]:
      tags[word_index[i, position]] = names[best_NxL[i, position]]
    out.append(tags)
  return out


def _one_device_if_replicated(params):
  """Replicated params (pmap mode) on one device: else every device computes the same."""
  leaves = jax.tree.leaves(params)
  if all(getattr(x, 'is_fully_replicated', False) for x in leaves):
    return jax.tree.map(lambda x: x.addressable_shards[0].data, params)
  return params


def config_metric(config) -> str:
  """The metric 'auto' stands for: binary F1 for two classes, else the task's first."""
  t = config.task
  if t.name == 'classification':
    return 'f1' if config.model.num_classes == 2 else 'macro_f1'
  return config_lib.TASK_METRICS[t.name][0]
