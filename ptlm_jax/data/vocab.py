"""Reserved token ids shared by every family, objective and tokenizer.

The id layout (one SentencePiece model serves BERT, GPT and T5):

  0 pad   1 eos   2 unk   3 bos   4 [CLS]   5 [SEP]   6 [MASK]   7.. ordinary pieces
  [piece_count, piece_count + 100)  T5 sentinels, counting down from the top:
                                    <extra_id_0> = size - 1, <extra_id_1> = size - 2, ...
  [size, model.vocab_size)          unused padding rows (embedding rounded up to 128)

An objective that needs more than 100 sentinels (UL2's X-denoisers at 512 tokens need
127) takes sentinels 100, 101, ... from the rows above the block, in ascending order
(`<extra_id_100>` = piece_count + 100), so the first 100 keep their ids.

`VocabInfo` carries the sizes and special ids an objective needs without importing a
tokenizer library.  Its defaults are the layout above; an HF checkpoint's tokenizer
(`hf_tokenizer.py`: BERT WordPiece, GPT-2 byte-level BPE, T5 SentencePiece) brings its own
special ids (BERT [PAD] 0, [CLS] 101, [SEP] 102, [MASK] 103; GPT-2 <|endoftext|> as EOS and
pad; T5 pad 0, EOS 1, sentinels from 32099 down) and its table of ordinary ids.
"""
from __future__ import annotations

import dataclasses

import numpy as np

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
BOS_ID = 3
CLS_ID = 4
SEP_ID = 5
MASK_ID = 6
FIRST_ORDINARY_ID = 7
SPECIAL_IDS = (PAD_ID, EOS_ID, UNK_ID, BOS_ID, CLS_ID, SEP_ID, MASK_ID)
USER_DEFINED_SYMBOLS = ('[CLS]', '[SEP]', '[MASK]')  # ids 4, 5, 6 in this order
NUM_SENTINELS = 100


@dataclasses.dataclass(frozen=True)
class VocabInfo:
  """Sizes of a tokenizer's id space.

  piece_count: SentencePiece pieces, ids [0, piece_count) (specials included).
  word_start: optional bool[size] table, True where a piece begins a word ('▁...');
    whole-word masking uses it.
  *_id: the special ids (None: the tokenizer has no such token).  A document ends with
    `eos_id` in packed rows; BERT rows are [CLS] ... [SEP]; pairs are joined by `sep_id`.
  ordinary_ids: sorted ids MLM may mask and draw as random replacements; None = the
    project's layout, [FIRST_ORDINARY_ID, piece_count).
  """
  piece_count: int
  num_sentinels: int = NUM_SENTINELS
  word_start: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
  pad_id: int = PAD_ID
  eos_id: int = EOS_ID
  unk_id: int | None = UNK_ID
  bos_id: int | None = BOS_ID
  cls_id: int | None = CLS_ID
  sep_id: int | None = SEP_ID
  mask_id: int | None = MASK_ID
  ordinary_ids: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def size(self) -> int:
    """Ids in use: pieces plus sentinels."""
    return self.piece_count + self.num_sentinels

  @property
  def ordinary_range(self) -> tuple[int, int]:
    """[low, high) of ordinary pieces in the project's layout (see `ordinary_ids`)."""
    return FIRST_ORDINARY_ID, self.piece_count

  def specials(self) -> dict[str, int]:
    """The special ids this vocabulary has, by name ('pad', 'eos', 'cls', ...)."""
    names = ('pad', 'eos', 'unk', 'bos', 'cls', 'sep', 'mask')
    return {n: getattr(self, f'{n}_id') for n in names if getattr(self, f'{n}_id') is not None}

  def sentinel(self, i: int) -> int:
    """Id of <extra_id_i>; T5 counts sentinels down from the top of the vocabulary."""
    if not 0 <= i < self.num_sentinels:
      raise ValueError(f'sentinel index {i} outside [0, {self.num_sentinels})')
    block = min(self.num_sentinels, NUM_SENTINELS)
    if i < block:
      return self.piece_count + block - 1 - i
    return self.piece_count + i  # beyond the 100: the rows above the block, ascending
