r"""Input pipeline throughput: one JSON line with tokens/s at a batch size and row length.

  python -m benchmarks.data_pipeline --corpus=news --batch_size=32 --seq_len=128 --pack_mode=pack

Times `--repeats` runs of `--batches` batches from the training iterator (process 0
of 1, prefetch as configured, caches warm: the first call builds them and is not
timed) and reports the median.  `tokens_per_s` counts real tokens (padding excluded);
`slots_per_s` counts every position of a row.
"""
import json
import os
import platform
import statistics
import time

# Before TFDS imports TensorFlow, which only reads TFRecords here: quiet its start-up
# lines (its oneDNN math kernels are never used).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags  # pylint: disable=g-import-not-at-top
import numpy as np
import sentencepiece
import tensorflow_datasets as tfds

from ptlm_jax import config_lib, errors

flags.DEFINE_string('corpus', 'news', 'news | shakespeare | tfds:<name>[/<config>]')
flags.DEFINE_integer('batch_size', 32, 'Rows per batch.')
flags.DEFINE_integer('seq_len', 128, 'Row length.')
flags.DEFINE_enum('pack_mode', 'pack', ['pack', 'chunk'], 'Packing mode.')
flags.DEFINE_integer('sp_vocab_size', 8000, 'SentencePiece pieces (trained once, cached).')
flags.DEFINE_integer('prefetch', 2, 'Batches built ahead on the background thread.')
flags.DEFINE_integer('batches', 300, 'Batches per timed repeat.')
flags.DEFINE_integer('repeats', 5, 'Timed repeats (the median is reported).')
FLAGS = flags.FLAGS


def benchmark(config, batches: int, repeats: int) -> dict:
  """Median throughput of the training iterator for `config` (see module docstring)."""
  from ptlm_jax.data import pipeline, tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.get_tokenizer(config)
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  next(it)  # starts the prefetch thread
  rates, rows_rates, slot_rates, pads = [], [], [], []
  for _ in range(repeats):
    real = 0
    start = time.perf_counter()
    for _ in range(batches):
      real += int(np.count_nonzero(next(it)['segment_ids']))
    seconds = time.perf_counter() - start
    slots = batches * config.train.batch_size * config.data.seq_len
    rates.append(real / seconds)
    slot_rates.append(slots / seconds)
    rows_rates.append(batches * config.train.batch_size / seconds)
    pads.append(1 - real / slots)
  it.close()
  return dict(
      tokens_per_s=round(statistics.median(rates)), rows_per_s=round(statistics.median(rows_rates)),
      slots_per_s=round(statistics.median(slot_rates)),
      padding_fraction=round(statistics.mean(pads), 4), corpus=config.data.corpus,
      batch_size=config.train.batch_size, seq_len=config.data.seq_len,
      pack_mode=config.data.pack_mode, prefetch=config.data.prefetch,
      batches=batches, repeats=repeats, cpus=os.cpu_count(),
      versions=dict(python=platform.python_version(), numpy=np.__version__,
                    sentencepiece=sentencepiece.__version__, tfds=tfds.__version__))


def run():
  tfds.disable_progress_bar()
  config = config_lib.base_config('gpt', 'tiny')
  d = config.data
  d.corpus, d.seq_len, d.pack_mode = FLAGS.corpus, FLAGS.seq_len, FLAGS.pack_mode
  d.sp_vocab_size, d.prefetch = FLAGS.sp_vocab_size, FLAGS.prefetch
  config.model.vocab_size = config_lib.padded_vocab_size(FLAGS.sp_vocab_size)
  config.model.max_len = max(config.model.max_len, FLAGS.seq_len)
  config.train.batch_size = FLAGS.batch_size
  config_lib.validate(config)
  print(json.dumps(benchmark(config, FLAGS.batches, FLAGS.repeats)), flush=True)


if __name__ == '__main__':
  app.run(errors.one_line_errors(run))
