"""Greedy (with HF's logits processors) and beam search equal HF transformers' `generate`.

Golden outputs: tests/fixtures/hf/generate_golden.json, written by
tests/fixtures/make_generate_fixtures.py with transformers 4.57.6 (PyTorch) on the tiny
random GPT-2 and T5 v1.1 fixtures, one prompt at a time.  Here both prompts decode as one
right-padded batch.
"""
import json
import os

import numpy as np
import pytest

from ptlm_jax.decoding import generate
from ptlm_jax.hf import convert as hf_import

HF = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'hf')
with open(os.path.join(HF, 'generate_golden.json')) as f:
  GOLDEN = json.load(f)
# HF generate() keyword -> Options field.
_FIELDS = {'eos_token_id': 'eos_id', 'num_beams': 'num_beams', 'early_stopping': 'early_stopping',
           'length_penalty': 'length_penalty', 'repetition_penalty': 'repetition_penalty',
           'no_repeat_ngram_size': 'no_repeat_ngram_size', 'min_new_tokens': 'min_new_tokens'}


@pytest.fixture(scope='module', params=['gpt2', 't5_v1_1'])
def hf_model(request):
  model, params, _ = hf_import.from_pretrained(os.path.join(HF, request.param))
  return request.param, model, params


# Every case of the golden file: plain greedy, the penalties (repetition penalty > 1 and
# < 1, n-gram ban), min_new_tokens, EOS handling, the three beam stopping modes
# (early_stopping True, False, 'never'), both signs of the length penalty.
CASES = ('greedy', 'greedy_penalties', 'greedy_penalties_eos', 'greedy_min_new',
         'greedy_repetition', 'beam_false', 'beam_true', 'beam_never', 'beam_never_negative',
         'beam_ngram')


def test_every_golden_case_is_compared():
  for model in GOLDEN['models'].values():
    assert sorted(model['cases']) == sorted(CASES)


@pytest.mark.parametrize('case', CASES)
def test_equals_hf_generate(hf_model, case):
  name, model, params = hf_model
  golden = GOLDEN['models'][name]['cases'][case]
  kwargs = golden['kwargs']
  fields = {_FIELDS[k]: v for k, v in kwargs.items()}
  o = generate.Options('beam' if 'num_beams' in kwargs else 'greedy',
                       max_new_tokens=GOLDEN['max_new_tokens'], **fields)
  prompts = GOLDEN['prompts']
  lengths = np.array([len(p) for p in prompts])
  prompt = np.zeros((len(prompts), lengths.max()), np.int32)
  for r, p in enumerate(prompts):
    prompt[r, :len(p)] = p
  out = generate.generate(model, params, prompt, lengths, o)
  for r, expected in enumerate(golden['tokens']):
    n = int(out.lengths_B[r])
    assert np.asarray(out.tokens_BxG[r, :n]).tolist() == expected, (name, case, r)
    assert (np.asarray(out.tokens_BxG[r, n:]) == o.pad_id).all()
    if golden['scores'][r] is not None:
      assert float(out.beam_scores_BxW[r, 0]) == pytest.approx(golden['scores'][r], rel=1e-4)
