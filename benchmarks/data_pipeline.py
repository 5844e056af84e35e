r"""Input pipeline: throughput, and time to the first batch on generated corpora.

  python -m benchmarks.data_pipeline --corpus=news --batch_size=32 --seq_len=128 --pack_mode=pack
  python -m benchmarks.data_pipeline --mode=streaming --sizes_mb=20,400

`--mode=throughput` (one JSON line): times `--repeats` runs of `--batches` batches from
the training iterator (process 0 of 1, prefetch as configured, every chunk's token ids
cached first, untimed) and reports the median.  `tokens_per_s` counts
real tokens (padding excluded); `slots_per_s` counts every position of a row.

`--mode=streaming` (one JSON line per corpus size): writes a local .txt corpus of each
size under /tmp (news articles repeated in a shuffled order, blank lines between
documents), then in a fresh child process with an empty token cache measures the time
from `make_pretrain_iterator` to the first batch, the child's peak RSS, and tokens/s
over `--batches` batches with tokenisation on the fly (cold) and again over the same
rows from the chunk cache (warm).  The tokenizer (news, `--sp_vocab_size`) is trained
once beforehand, so its training is not in the figure.
"""
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
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

flags.DEFINE_enum('mode', 'throughput', ['throughput', 'streaming', 'streaming_child'],
                  'What to measure (module docstring); streaming_child is internal.')
flags.DEFINE_list('sizes_mb', ['20', '400'], 'Streaming: generated corpus sizes in MB.')
flags.DEFINE_string('files', '', 'streaming_child: the corpus file.')
flags.DEFINE_string('tokenizer_path', '', 'streaming_child: the tokenizer .model file.')
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
  pipeline.tokenized_split(config, tok, config.data.train_split)  # every chunk's ids cached
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


def _write_corpus(path: str, megabytes: int, texts: list[str]) -> None:
  """`megabytes` MB of news articles, repeated in shuffled orders, blank lines between."""
  rng = np.random.default_rng(0)
  written, target = 0, megabytes * 1_000_000
  with open(path, 'w', encoding='utf-8') as f:
    while written < target:
      block = '\n\n'.join(texts[i] for i in rng.permutation(len(texts))) + '\n\n'
      block = block[:target - written]
      f.write(block)
      written += len(block.encode('utf-8'))


def streaming_child(config) -> dict:
  """In a fresh process: first-batch time, tokens/s cold then warm, peak RSS."""
  from ptlm_jax.data import pipeline, tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.get_tokenizer(config)
  tok.encode_batch(['warm up'])  # SentencePiece's first call sets up its threads
  start = time.perf_counter()
  it = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  next(it)
  first_batch_s = time.perf_counter() - start
  rss_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

  def rate(iterator):
    real, begin = 0, time.perf_counter()
    for _ in range(FLAGS.batches):
      real += int(np.count_nonzero(next(iterator)['segment_ids']))
    return real / (time.perf_counter() - begin)

  cold = rate(it)
  it.close()
  again = pipeline.make_pretrain_iterator(config, tok, process_index=0, process_count=1)
  next(again)  # the same rows as above, now from the chunk cache
  warm = rate(again)
  again.close()
  return dict(first_batch_s=round(first_batch_s, 3), peak_rss_mb_at_first_batch=round(rss_first),
              peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              tokens_per_s_cold=round(cold), tokens_per_s_cached=round(warm))


def streaming(config) -> None:
  """One JSON line per corpus size (see the module docstring)."""
  import tensorflow_datasets as tfds_  # pylint: disable=g-import-not-at-top
  from ptlm_jax.data import corpora, tokenizer  # pylint: disable=g-import-not-at-top
  tok = tokenizer.get_tokenizer(config)  # news, trained once and cached
  texts = [ex['text'].decode('utf-8') for ex in tfds_.as_numpy(tfds_.load(
      'news', split='train', data_dir=corpora.default_data_dir()))]
  folder = tempfile.mkdtemp(prefix='ptlm_stream_')
  try:
    sizes = list(map(int, FLAGS.sizes_mb))
    for megabytes in sizes:
      _write_corpus(os.path.join(folder, f'corpus{megabytes}mb.txt'), megabytes, texts)
    # Interleaved repeats (20, 400, 20, 400, ...): a loaded machine slows both alike.
    for repeat, megabytes in [(r, m) for r in range(FLAGS.repeats) for m in sizes]:
      path = os.path.join(folder, f'corpus{megabytes}mb.txt')
      cache = os.path.join(folder, f'cache{megabytes}')
      shutil.rmtree(cache, ignore_errors=True)  # every child starts with no token ids
      env = dict(os.environ, PTLM_DATA_DIR=cache)
      args = [sys.executable, '-m', 'benchmarks.data_pipeline', '--mode=streaming_child',
              f'--files={path}', f'--tokenizer_path={tok.path}',
              f'--sp_vocab_size={FLAGS.sp_vocab_size}', f'--batch_size={FLAGS.batch_size}',
              f'--seq_len={FLAGS.seq_len}', f'--pack_mode={FLAGS.pack_mode}',
              f'--batches={FLAGS.batches}', f'--prefetch={FLAGS.prefetch}']
      begin = time.perf_counter()
      child = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
      if child.returncode:
        raise errors.UserError(f'streaming child failed: {child.stderr.strip()[-500:]}')
      result = json.loads(child.stdout.strip().splitlines()[-1])
      result.update(corpus_mb=megabytes, repeat=repeat,
                    child_wall_s=round(time.perf_counter() - begin, 2),
                    batch_size=FLAGS.batch_size, seq_len=FLAGS.seq_len,
                    pack_mode=FLAGS.pack_mode, batches=FLAGS.batches, cpus=os.cpu_count())
      print(json.dumps(result), flush=True)
  finally:
    shutil.rmtree(folder, ignore_errors=True)


def run():
  tfds.disable_progress_bar()
  config = config_lib.base_config('gpt', 'tiny')
  d = config.data
  if FLAGS.mode == 'streaming_child':
    d.corpus, d.train_files, d.validation_files = 'files', FLAGS.files, FLAGS.files
    d.tokenizer_path = FLAGS.tokenizer_path
  elif FLAGS.mode == 'streaming':
    d.corpus = 'news'
  else:
    d.corpus = FLAGS.corpus
  d.seq_len, d.pack_mode = FLAGS.seq_len, FLAGS.pack_mode
  d.sp_vocab_size, d.prefetch = FLAGS.sp_vocab_size, FLAGS.prefetch
  config.model.vocab_size = config_lib.padded_vocab_size(FLAGS.sp_vocab_size)
  config.model.max_len = max(config.model.max_len, FLAGS.seq_len)
  config.train.batch_size = FLAGS.batch_size
  config_lib.validate(config)
  if FLAGS.mode == 'streaming_child':
    print(json.dumps(streaming_child(config)), flush=True)
  elif FLAGS.mode == 'streaming':
    streaming(config)
  else:
    print(json.dumps(benchmark(config, FLAGS.batches, FLAGS.repeats)), flush=True)


if __name__ == '__main__':
  app.run(errors.one_line_errors(run))
