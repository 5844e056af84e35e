"""Extractive QA features: contexts in windows with a document stride, and span decoding.

The steps of BERT's `run_squad.py`, per example:
1. The context is split at whitespace into words (with their character offsets), each
   word into sub-word pieces; the answer's characters give its first and last piece.
2. The question (at most `task.max_query_length` pieces) and a window of the context go
   in one row (BERT: [CLS] q [SEP] window [SEP]; GPT/T5: q [SEP] window EOS).  A context
   longer than a window is covered by windows starting every `task.doc_stride` pieces.
3. A window that holds the whole answer is labelled with its start and end row
   positions; one that does not points both at position 0 (SQuAD v1.1 training).
4. Decoding (`best_spans`): in each window of an example, the `task.n_best` highest
   start and end logits are paired; a pair counts if both lie in the context, start <=
   end, the span is at most `task.max_answer_length` pieces, and the start piece has its
   maximum context in this window (of all windows holding a piece, the one where it has
   the most words on its shorter side); the best pair by start + end logit, over all
   windows, is the answer: the context's characters from its first word to its last.

Answers are cut at word boundaries (whitespace words, as BERT's original), so
"Hamlet:" comes back with its colon; the SQuAD normalisation drops punctuation.

Legend: F windows (features), L row length.
"""
from __future__ import annotations

import re

import numpy as np

from ptlm_jax import families
from ptlm_jax.finetune import features as feature_rows


def context_words(context: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Whitespace words with their [start, end) character offsets."""
  matches = list(re.finditer(r'\S+', context))
  return ([m.group() for m in matches], np.array([m.start() for m in matches], np.int64),
          np.array([m.end() for m in matches], np.int64))


def window_starts(num_pieces: int, window: int, stride: int) -> list[int]:
  """First piece of each window: every `stride` pieces until the last one reaches the end."""
  starts = [0]
  while starts[-1] + window < num_pieces:
    starts.append(starts[-1] + min(stride, window))
  return starts


def max_context(starts: list[int], window: int, num_pieces: int) -> np.ndarray:
  """[windows, num_pieces] bool: the window in which each piece has the most context."""
  score = np.full((len(starts), num_pieces), -np.inf)
  for w, s in enumerate(starts):
    e = min(s + window, num_pieces)
    i = np.arange(s, e)
    score[w, s:e] = np.minimum(i - s, e - 1 - i) + 0.01 * (e - s)
  return score == score.max(axis=0, keepdims=True)


def _answer_pieces(ex, starts_c, ends_c, first_piece, num_pieces):
  answers = ex.get('answers') or {}
  if not answers.get('text'):
    return None
  start_char = int(answers['answer_start'][0])
  end_char = start_char + len(answers['text'][0]) - 1
  inside = np.nonzero((starts_c <= end_char) & (ends_c > start_char))[0]
  if not inside.size:
    return None
  first_word, last_word = inside[0], inside[-1]
  end_piece = first_piece[last_word + 1] - 1 if last_word + 1 < len(first_piece) else num_pieces - 1
  return first_piece[first_word], end_piece


def encode_qa(config, tokenizer, examples: list[dict]) -> feature_rows.TaskData:
  """One feature row per (example, window); see the module docstring."""
  t, length, family = config.task, config.data.seq_len, config.model.family
  info = tokenizer.vocab_info
  questions = tokenizer.encode_batch([ex['question'] for ex in examples])
  cache: dict[str, list[int]] = {}
  token_rows, type_rows, spans = [], [], []
  feature_example, token_word, is_max = [], [], []
  word_chars = []
  for e, (ex, question) in enumerate(zip(examples, questions)):
    words, starts_c, ends_c = context_words(ex['context'])
    word_chars.append((starts_c, ends_c))
    pieces = feature_rows.word_pieces(tokenizer, words, cache)
    piece_word = np.array([w for w, p in enumerate(pieces) for _ in p], np.int32)
    flat = [i for p in pieces for i in p]
    first_piece = np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).astype(int)
    answer = _answer_pieces(ex, starts_c, ends_c, first_piece, len(flat))
    q = question[:t.max_query_length]
    head = [info.cls_id] + q + [info.sep_id] if families.get(family).bidirectional else q + [info.sep_id]
    tail = [info.sep_id] if families.get(family).bidirectional else [info.eos_id]
    window = length - len(head) - len(tail)
    starts = window_starts(len(flat), window, t.doc_stride)
    best = max_context(starts, window, len(flat))
    for w, s in enumerate(starts):
      part = flat[s:s + window]
      token_rows.append(head + part + tail)
      type_rows.append([0] * len(head) + [1] * (len(part) + len(tail)))
      words_of_row = np.full(length, -1, np.int32)
      words_of_row[len(head):len(head) + len(part)] = piece_word[s:s + len(part)]
      best_of_row = np.zeros(length, bool)
      best_of_row[len(head):len(head) + len(part)] = best[w, s:s + len(part)]
      token_word.append(words_of_row)
      is_max.append(best_of_row)
      feature_example.append(e)
      if answer and s <= answer[0] and answer[1] < s + len(part):
        spans.append((answer[0] - s + len(head), answer[1] - s + len(head)))
      else:
        spans.append((0, 0))
  features = feature_rows.row_features(token_rows, type_rows, length)
  features['spans'] = np.array(spans, np.int32).reshape(-1, 2)
  host = dict(feature_example=np.array(feature_example, np.int32),
              token_word=np.stack(token_word), max_context=np.stack(is_max),
              word_chars=word_chars)
  return feature_rows.TaskData(features, examples, host)


def best_spans(start_logits_FxL, end_logits_FxL, token_word_FxL, max_context_FxL, *,
               n_best: int, max_answer_length: int) -> list[tuple[float, int, int]]:
  """The n-best (score, first word, last word) answers over one example's windows."""
  found = {}
  for f in range(start_logits_FxL.shape[0]):
    start_l, end_l = start_logits_FxL[f], end_logits_FxL[f]
    words, best = token_word_FxL[f], max_context_FxL[f]
    for s in np.argsort(-start_l, kind='stable')[:n_best]:
      for e in np.argsort(-end_l, kind='stable')[:n_best]:
        if words[s] < 0 or words[e] < 0 or not best[s] or e < s or e - s + 1 > max_answer_length:
          continue
        score = float(start_l[s] + end_l[e])
        key = (int(words[s]), int(words[e]))
        if score > found.get(key, -np.inf):
          found[key] = score
  ranked = sorted(((score, w0, w1) for (w0, w1), score in found.items()), reverse=True)
  return ranked[:n_best]


def decode_answers(data: feature_rows.TaskData, start_logits_FxL, end_logits_FxL, *, n_best: int,
                   max_answer_length: int) -> list[str]:
  """The best answer text of every example ('' when no window offers a valid span)."""
  host = data.host
  answers = []
  for e, ex in enumerate(data.examples):
    rows = np.nonzero(host['feature_example'] == e)[0]
    spans = best_spans(start_logits_FxL[rows], end_logits_FxL[rows], host['token_word'][rows],
                       host['max_context'][rows], n_best=n_best,
                       max_answer_length=max_answer_length)
    if not spans:
      answers.append('')
      continue
    _, first, last = spans[0]
    starts_c, ends_c = host['word_chars'][e]
    answers.append(ex['context'][starts_c[first]:ends_c[last]])
  return answers
