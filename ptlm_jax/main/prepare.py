r"""The data stage as a job: corpus, tokenizer, token cache and pipeline statistics.

  python -m ptlm_jax.main.prepare --config=configs/gpt.py:tiny --workdir=runs/data

Fetches the corpus (first run only), trains or loads the tokenizer, tokenises the train
and eval splits into the cache, makes one pass of the packed pipeline over each, prints
what it found and writes it to `<workdir>/data_stats.json`.  `./launch.sh` runs this.
A user error (bad config, no network, unreadable file) prints one line and exits 2.
"""
import json
import os
import pathlib
import time

# Before TFDS imports TensorFlow, which only reads TFRecords here: quiet its start-up
# lines (its oneDNN math kernels are never used).
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags

from ptlm_jax import config_lib, errors
from ptlm_jax.main import cli

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Config file and variant, e.g. configs/gpt.py:tiny; fields can be '
    'overridden with --config.data.<field>=value.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where data_stats.json is written (created if missing).')
flags.mark_flags_as_required(['config', 'workdir'])


def _say(msg: str) -> None:
  print(msg, flush=True)


def _sample_row(tok, batch) -> list[str]:
  """The documents of the first row, decoded, each closed by <eos> when it ends there."""
  tokens, segments = batch['tokens'][0], batch['segment_ids'][0]
  pieces = []
  for s in range(1, int(segments.max()) + 1):
    ids = tokens[segments == s]
    pieces.append(tok.decode(ids) + ('<eos>' if ids[-1] == 1 else ''))
  return pieces


def _pass_stats(config, tok, split: str) -> dict:
  """One finite pass of the packed pipeline over `split` (process 0 of 1)."""
  from ptlm_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  start = time.time()
  data = pipeline.tokenized_split(config, tok, split)
  tokenise_s = time.time() - start
  it = pipeline.make_pretrain_iterator(config, tok, split=split, process_index=0,
                                       process_count=1, infinite=False)
  rows = real = slots = 0
  sample = None
  start = time.time()
  for batch in it:
    sample = sample or _sample_row(tok, batch)
    used = batch['segment_ids'].any(axis=1)
    rows += int(used.sum())
    real += int((batch['segment_ids'] > 0).sum())
    slots += int(used.sum()) * batch['tokens'].shape[1]
  seconds = time.time() - start
  assert real == data.num_tokens, (real, data.num_tokens)  # every token exactly once
  return dict(documents=data.num_documents, tokens=data.num_tokens, rows=rows,
              padding_fraction=round(1 - real / max(slots, 1), 4),
              tokens_per_s=round(real / max(seconds, 1e-9)),
              tokenise_or_load_s=round(tokenise_s, 2), sample_row=sample)


def prepare(config, workdir: str) -> dict:
  """Runs the data stage for `config` and writes `<workdir>/data_stats.json`; returns it."""
  config_lib.validate(config)
  from ptlm_jax.data import sources, tokenizer  # pylint: disable=g-import-not-at-top
  d = config.data
  stats = dict(corpus=d.corpus, seq_len=d.seq_len, pack_mode=d.pack_mode,
               batch_size=config.train.batch_size)

  _say(f'[1/4] corpus {d.corpus}: fetching and preparing (first run only)')
  start = time.time()
  if d.corpus == 'files':  # your own files: nothing to prepare; counted by the passes below
    from ptlm_jax.data import local_files  # pylint: disable=g-import-not-at-top
    local_files.resolve(config)
    stats['files'] = {s: local_files.corpus_files(config, s) for s in (d.train_split,
                                                                       d.eval_split)}
    _say('      ' + ', '.join(f'{s}: {len(f)} files' for s, f in stats['files'].items()))
  else:
    builder = sources.get_builder(sources.tfds_name(d.corpus), data_dir=d.data_dir,
                                  download=d.download, network_probe=d.network_probe)
    stats['splits'] = {s: info.num_examples for s, info in builder.info.splits.items()}
    _say(f'      {builder.info.full_name} in {builder.data_dir} ({time.time() - start:.1f} s): '
         + ', '.join(f'{s} {n:,}' for s, n in stats['splits'].items()) + ' documents')

  _say(f'[2/4] tokenizer: {d.sp_model_type}, {d.sp_vocab_size} pieces')
  start = time.time()
  tok = tokenizer.get_tokenizer(config)
  stats['tokenizer'] = dict(path=tok.path, pieces=tok.piece_count, size=tok.vocab_info.size,
                            embedding_rows=config.model.vocab_size,
                            seconds=round(time.time() - start, 1))
  _say(f'      {tok.path} ({tok.vocab_info.size} ids with sentinels; '
       f'{time.time() - start:.1f} s)')

  stats['passes'] = {}
  for i, split in enumerate(dict.fromkeys([d.train_split, d.eval_split])):
    _say(f'[{3 + i}/4] pipeline on {split}: tokenise (cached after the first run), '
         f'then one pass in {d.pack_mode} mode, rows of {d.seq_len}')
    s = stats['passes'][split] = _pass_stats(config, tok, split)
    _say(f"      {s['documents']:,} documents, {s['tokens']:,} tokens -> {s['rows']:,} rows, "
         f"padding {100 * s['padding_fraction']:.1f}%, {s['tokens_per_s'] / 1e6:.1f} M tokens/s")
  sample = stats['passes'][d.train_split]['sample_row']
  _say('      first train row: ' + ' | '.join(sample)[:400].replace('\n', '\\n'))

  path = pathlib.Path(workdir) / 'data_stats.json'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(stats, indent=2) + '\n')
  _say(f'wrote {path}')
  return stats


def _run():
  cli.quiet_logs()
  prepare(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  app.run(errors.one_line_errors(_run), flags_parser=cli.parse_flags)
