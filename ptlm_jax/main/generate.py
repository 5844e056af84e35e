r"""Generate text or fill masks from a training workdir, a model dir or an HF checkpoint.

  python -m ptlm_jax.main.generate --workdir=runs/gpt --prompt="Once upon a time" \
      --strategy=beam --num_beams=4 --max_new_tokens=32
  python -m ptlm_jax.main.generate --workdir=runs/bert --fill_mask="The cat sat on the [MASK]."
"""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TFDS reads corpus metadata through TF

from absl import app, flags  # pylint: disable=g-import-not-at-top

from ptlm_jax import errors, families
from ptlm_jax.decoding import generate, inference
from ptlm_jax.main import cli

UserError = errors.UserError


def _early_stopping(value: str) -> bool | str:
  table = {'true': True, 'false': False, 'never': 'never'}
  if str(value).lower() not in table:
    raise UserError(f'early_stopping={value!r} is invalid: expected true, false or never')
  return table[str(value).lower()]


def run_cli(workdir: str, prompts: list[str], fill_mask: str | None, options: generate.Options,
            tokenizer: str = '', seed: int = 0, step: int | None = None, top_k: int = 0) -> str:
  """What `python -m ptlm_jax.main.generate` prints (importable, e.g. for tests)."""
  if not workdir:
    raise UserError('--workdir is required (a training workdir, a ptlm_jax model dir or an HF '
                    'checkpoint dir)')
  if bool(prompts) == bool(fill_mask):
    raise UserError('give --prompt (GPT, T5) or --fill_mask (BERT), not both or neither')
  options.validate()
  loaded = inference.load(workdir, tokenizer=tokenizer, step=step)
  if fill_mask:
    lines = [fill_mask]
    for k, choices in enumerate(inference.fill_mask_text(loaded, fill_mask, top_k or 5)):
      lines.append(f'[MASK] {k + 1}:')
      lines.extend(f'  {token!r:<16} {prob:.4f}' for token, prob in choices)
    return '\n'.join(lines)
  if families.get(loaded.model_config.family).bidirectional:
    raise UserError(f'{workdir} is a BERT model: it fills masks (--fill_mask="... [MASK] ..."), '
                    'it does not continue a --prompt')
  texts = inference.generate_text(loaded, prompts, inference.options_for(loaded, options), seed=seed)
  if families.get(loaded.model_config.family).encoder_decoder:
    return '\n'.join(f'{p} -> {t}' if len(prompts) > 1 else t for p, t in zip(prompts, texts))
  return '\n\n'.join(texts)


def _define_flags():
  flags.DEFINE_string('workdir', None, 'A training workdir (its latest checkpoint), a ptlm_jax '
                      'model dir or an HF checkpoint dir.')
  flags.DEFINE_multi_string('prompt', [], 'Text to continue (GPT) or to transform (T5); repeat '
                            'the flag for a batch of prompts.')
  flags.DEFINE_string('fill_mask', None, 'BERT: a text with [MASK] tokens; prints the top_k '
                      'tokens (default 5) and their probabilities at each.')
  flags.DEFINE_string('tokenizer', '', 'Tokenizer file or dir (overrides the one found with '
                      'the model): a SentencePiece .model, tokenizer.json, vocab.txt, vocab.json.')
  flags.DEFINE_integer('step', None, 'Checkpoint step of a training workdir (default: latest).')
  defaults = generate.Options()
  flags.DEFINE_string('strategy', defaults.strategy, 'greedy | sample | beam')
  flags.DEFINE_float('temperature', defaults.temperature, 'sample: logits / temperature.')
  flags.DEFINE_integer('top_k', defaults.top_k, 'sample: keep the k most likely tokens (0 = off); '
                       'fill-mask: how many tokens to print.')
  flags.DEFINE_float('top_p', defaults.top_p, 'sample: nucleus mass p (1 = off).')
  flags.DEFINE_integer('num_beams', defaults.num_beams, 'beam: number of beams.')
  flags.DEFINE_integer('max_new_tokens', defaults.max_new_tokens, 'New tokens per prompt.')
  flags.DEFINE_integer('min_new_tokens', defaults.min_new_tokens, 'EOS is banned before this.')
  flags.DEFINE_float('length_penalty', defaults.length_penalty, 'beam: alpha.')
  flags.DEFINE_string('length_penalty_style', defaults.length_penalty_style,
                      'beam: hf (len**alpha) | t5x (((5 + len) / 6)**alpha)')
  flags.DEFINE_string('early_stopping', 'false', 'beam: true | false | never')
  flags.DEFINE_float('repetition_penalty', defaults.repetition_penalty, '> 1 discourages '
                     'repeating tokens (1 = off).')
  flags.DEFINE_integer('no_repeat_ngram_size', defaults.no_repeat_ngram_size,
                       'Never repeat an n-gram of this size (0 = off).')
  flags.DEFINE_integer('seed', 0, 'sample: random seed.')


def _run():
  cli.quiet_logs()
  f = flags.FLAGS
  options = generate.Options(
      strategy=f.strategy, max_new_tokens=f.max_new_tokens, min_new_tokens=f.min_new_tokens,
      temperature=f.temperature, top_k=f.top_k if f.fill_mask is None else 0, top_p=f.top_p,
      num_beams=f.num_beams, length_penalty=f.length_penalty,
      length_penalty_style=f.length_penalty_style,
      early_stopping=_early_stopping(f.early_stopping),
      repetition_penalty=f.repetition_penalty, no_repeat_ngram_size=f.no_repeat_ngram_size)
  print(run_cli(f.workdir, f.prompt, f.fill_mask, options, f.tokenizer, f.seed, f.step,
                f.top_k))


if __name__ == '__main__':
  _define_flags()
  app.run(errors.one_line_errors(_run, quiet='error'), flags_parser=cli.parse_flags)
