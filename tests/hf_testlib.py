"""Tiny random HF checkpoints with real tokenizer files, built at test time (no hub).

  dirs = hf_testlib.build(tmp_path)      # {'bert': ..., 'gpt2': ..., 't5': ...}

Each directory is what `save_pretrained` writes for a model and its fast tokenizer:
config.json + model.safetensors, tokenizer.json (+ vocab.txt for BERT, vocab.json +
merges.txt for GPT-2), tokenizer_config.json, special_tokens_map.json.  The tokenizers are
trained with HF `tokenizers` on SENTENCES (a generated review corpus) the way each family's
is built: BERT WordPiece (lower case, specials after ten [unused] slots so that [CLS] = 12,
[SEP] = 13, [MASK] = 14, unlike this project's 4 / 5 / 6), GPT-2 byte-level BPE with
<|endoftext|> as its last id, T5 Unigram (pad 0, </s> 1, <unk> 2) with 100 sentinels at the
top counting down.  Needs torch and transformers (the test extras).
"""
import os
import random

GOOD = ('good', 'great', 'wonderful', 'superb', 'moving', 'delightful', 'brilliant', 'charming')
BAD = ('bad', 'awful', 'boring', 'dull', 'clumsy', 'tedious', 'terrible', 'lifeless')
NOUNS = ('film', 'movie', 'story', 'cast', 'script', 'ending', 'score', 'director', 'plot')
FILLER = ('the', 'a', 'this', 'was', 'is', 'and', 'truly', 'quite', 'really', 'its', 'of',
          'with', 'in', 'overall', 'Honestly,', 'frankly', 'every', 'scene', 'feels')


def review(rng: random.Random, positive: bool) -> str:
  words = [rng.choice(FILLER) for _ in range(rng.randint(3, 7))]
  words.insert(rng.randint(0, len(words)), rng.choice(NOUNS))
  words.insert(rng.randint(0, len(words)), rng.choice(GOOD if positive else BAD))
  return ' '.join(words).capitalize() + rng.choice(('.', '!', '...'))


def reviews(n: int, seed: int) -> list[tuple[str, str]]:
  """n (text, 'positive' | 'negative') pairs, balanced."""
  rng = random.Random(seed)
  return [(review(rng, k % 2 == 0), 'positive' if k % 2 == 0 else 'negative') for k in range(n)]


SENTENCES = [text for text, _ in reviews(400, seed=1)] + [
    'Romeo loves Juliet in Verona.', 'Héllo wörld: naïve café, 3.14 résumé!',
    'unbelievable', 'The <extra_id_0> sat on the mat.']


def _bert_tokenizer():
  from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  import transformers
  tok = Tokenizer(models.WordPiece(unk_token='[UNK]'))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  specials = ['[PAD]'] + [f'[unused{i}]' for i in range(10)] + ['[UNK]', '[CLS]', '[SEP]', '[MASK]']
  tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=300,
                                                               special_tokens=specials))
  cls, sep = tok.token_to_id('[CLS]'), tok.token_to_id('[SEP]')
  tok.post_processor = processors.TemplateProcessing(
      single='[CLS] $A [SEP]', pair='[CLS] $A [SEP] $B:1 [SEP]:1',
      special_tokens=[('[CLS]', cls), ('[SEP]', sep)])
  tok.decoder = decoders.WordPiece()
  return transformers.BertTokenizerFast(tokenizer_object=tok, do_lower_case=True)


def _gpt2_tokenizer():
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  import transformers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(
      vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_special_tokens(['<|endoftext|>'])  # the last id, as GPT-2's 50256
  return transformers.GPT2TokenizerFast(tokenizer_object=tok, bos_token='<|endoftext|>',
                                        eos_token='<|endoftext|>', unk_token='<|endoftext|>')


def _t5_tokenizer():
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
  import transformers
  tok = Tokenizer(models.Unigram())
  tok.normalizer = normalizers.Sequence([normalizers.Nmt(), normalizers.NFKC(),
                                         normalizers.Replace(Regex(' {2,}'), ' ')])
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme='always')
  tok.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme='always')
  tok.train_from_iterator(SENTENCES, trainers.UnigramTrainer(
      vocab_size=300, special_tokens=['<pad>', '</s>', '<unk>'], unk_token='<unk>'))
  tok.post_processor = processors.TemplateProcessing(
      single='$A </s>', pair='$A </s> $B </s>', special_tokens=[('</s>', 1)])
  tok.add_special_tokens([f'<extra_id_{i}>' for i in reversed(range(100))])  # 0 on top
  return transformers.T5TokenizerFast(tokenizer_object=tok, extra_ids=100)


def build(root, families=('bert', 'gpt2', 't5')) -> dict[str, str]:
  """Saves a tiny random model with its tokenizer per family under `root`; returns the dirs."""
  import torch
  import transformers
  out = {}
  for family in families:
    path = os.path.join(str(root), family)
    out[family] = path
    if os.path.exists(os.path.join(path, 'model.safetensors')):
      continue
    torch.manual_seed(0)
    if family == 'bert':
      tok = _bert_tokenizer()
      model = transformers.BertForMaskedLM(transformers.BertConfig(
          vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=64, max_position_embeddings=64, pad_token_id=tok.pad_token_id))
    elif family == 'gpt2':
      tok = _gpt2_tokenizer()
      model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
          vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64,
          bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    else:
      tok = _t5_tokenizer()
      model = transformers.T5ForConditionalGeneration(transformers.T5Config(
          vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
          relative_attention_num_buckets=8, relative_attention_max_distance=16,
          feed_forward_proj='gated-gelu', tie_word_embeddings=False, pad_token_id=0,
          eos_token_id=1, decoder_start_token_id=0))
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
  return out
