"""Fine-tuning feature rows: the family's layout of one input (or pair), padded int32 rows.

Shared by the task encoders (`data.py`) and the QA windows (`qa.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ptlm_jax import families
from ptlm_jax.data import vocab

PROJECT_IDS = vocab.VocabInfo(0)  # the special ids of this project's tokenizers

@dataclasses.dataclass
class TaskData:
  """Encoded features, and what evaluation needs to map predictions back to examples."""
  features: dict[str, np.ndarray]
  examples: list[dict]
  host: dict[str, Any] = dataclasses.field(default_factory=dict)  # per-feature host info


def layout(family: str, first: list[int], second: list[int] | None, length: int,
           info: vocab.VocabInfo = PROJECT_IDS):
  """(tokens, token_types) of one input (or pair) in the family's layout, cut to `length`.

  The specials are the tokenizer's (`info`): an HF BERT's [CLS] 101 / [SEP] 102, GPT-2's and
  T5's EOS (which also joins a pair there, as transformers does), this project's 4 / 5 / 1.
  """
  specials = (3 if second is not None else 2) if families.get(family).bidirectional else (
      2 if second is not None else 1)
  budget = length - specials
  first, second = list(first), list(second) if second is not None else None
  while len(first) + len(second or []) > budget:  # longest first, as BERT's truncation
    if second and len(second) >= len(first):
      second.pop()
    else:
      first.pop()
  if families.get(family).bidirectional:
    tokens = [info.cls_id] + first + [info.sep_id]
    types = [0] * len(tokens)
    if second is not None:
      tokens += second + [info.sep_id]
      types += [1] * (len(second) + 1)
    return tokens, types
  if second is None:
    return first + [info.eos_id], [0] * (len(first) + 1)
  return (first + [info.sep_id] + second + [info.eos_id],
          [0] * (len(first) + 1) + [1] * (len(second) + 1))


def pad_rows(rows: list[list[int]], length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f'row of {len(row)} ids does not fit {length}')
    out[i, :len(row)] = row
  return out


def row_features(token_rows: list[list[int]], type_rows: list[list[int]], length: int):
  tokens = pad_rows(token_rows, length)
  segment_ids = (np.arange(length)[None, :] < np.array([len(r) for r in token_rows])[:, None])
  segment_ids = segment_ids.astype(np.int32)
  positions = (np.arange(length, dtype=np.int32)[None, :] * segment_ids).astype(np.int32)
  return dict(tokens=tokens, segment_ids=segment_ids, positions=positions,
              token_types=pad_rows(type_rows, length))


def word_pieces(tokenizer, words: list[str], cache: dict) -> list[list[int]]:
  """Each word's pieces as inside a sentence (GPT-2's BPE: with its leading space)."""
  missing = sorted({w for w in words if w not in cache})
  unk = tokenizer.vocab_info.unk_id
  for w, ids in zip(missing, tokenizer.encode_words(missing) if missing else []):
    cache[w] = ids or [unk if unk is not None else tokenizer.vocab_info.eos_id]  # normalises to nothing
  return [cache[w] for w in words]
