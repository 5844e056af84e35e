"""A line-by-line numpy port of T5's span-corruption reference, for tests only.

Copies `random_spans_noise_mask`, `noise_span_to_unique_sentinel`,
`nonnoise_span_to_unique_sentinel` and `random_spans_helper` from
google-research/text-to-text-transfer-transformer `t5/data/preprocessors.py`, with TF
ops replaced by numpy (float32 where T5 casts to float32) and the two shuffles of
`_random_segmentation` injected, so a test can feed a fixed segmentation.
"""
import numpy as np


def t5_random_spans_noise_mask(length, noise_density, shuffles, mean_noise_span_length=3.0,
                               roll_offset=None):
  orig_length = length
  length = max(length, 2)
  num_noise_tokens = int(np.round(np.float32(length) * np.float32(noise_density)))
  num_noise_tokens = min(max(num_noise_tokens, 1), length - 1)
  num_noise_spans = int(np.round(np.float32(num_noise_tokens) /
                                 np.float32(mean_noise_span_length)))
  num_noise_spans = max(num_noise_spans, 1)
  num_nonnoise_tokens = length - num_noise_tokens

  def _random_segmentation(num_items, num_segments, shuffle):
    first_in_segment = np.pad(
        shuffle((np.arange(num_items - 1) < num_segments - 1).astype(np.int32)), [[1, 0]])
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id)  # tf.math.segment_sum(ones, sorted segment_id)

  noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, shuffles[0])
  nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans, shuffles[1])
  interleaved_span_lengths = np.reshape(
      np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1), [num_noise_spans * 2])
  span_starts = np.cumsum(interleaved_span_lengths)[:-1]
  span_start_indicator = np.bincount(span_starts, minlength=length)  # unsorted_segment_sum
  span_num = np.cumsum(span_start_indicator)
  is_noise = np.equal(span_num % 2, 1)
  mask = is_noise[:orig_length]
  if roll_offset is not None:
    mask = np.roll(mask, roll_offset)
  return mask


def t5_noise_span_to_unique_sentinel(tokens, noise_mask, vocab_size):
  prev_token_is_noise = np.pad(noise_mask[:-1], [[1, 0]])
  first_noise_tokens = np.logical_and(noise_mask, np.logical_not(prev_token_is_noise))
  subsequent_noise_tokens = np.logical_and(noise_mask, prev_token_is_noise)
  sentinel = vocab_size - 1 + 1 - np.cumsum(first_noise_tokens.astype(tokens.dtype))
  tokens = np.where(first_noise_tokens, sentinel, tokens)
  return tokens[np.logical_not(subsequent_noise_tokens)]


def t5_nonnoise_span_to_unique_sentinel(tokens, noise_mask, vocab_size):
  return t5_noise_span_to_unique_sentinel(tokens, np.logical_not(noise_mask), vocab_size)


def t5_random_spans_helper(inputs_length, noise_density, mean_noise_span_length):
  """t5 random_spans_helper with one extra token per span on each side."""
  def lengths(tokens_length):
    num_noise_tokens = int(round(tokens_length * noise_density))
    num_nonnoise_tokens = tokens_length - num_noise_tokens
    num_noise_spans = int(round(num_noise_tokens / mean_noise_span_length))
    return (num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1)
  tokens_length = inputs_length - 1
  while lengths(tokens_length + 1)[0] <= inputs_length:
    tokens_length += 1
  inputs_length, targets_length = lengths(tokens_length)
  if noise_density == 0.5 and targets_length > inputs_length:
    tokens_length -= 1
    targets_length -= 1
  return tokens_length, targets_length
