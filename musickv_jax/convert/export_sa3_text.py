"""A small offline Gemma tokenizer for Stable Audio 3's text encoder, built by hand.

The published SA3 folders ship Gemma's tokenizer (`tokenizer/`: tokenizer.json, tokenizer_config.json, ...), which
cannot be downloaded here. `build_tiny_gemma_tokenizer` makes one of the same kind, deterministically, with no
training: a byte-fallback BPE model over a hand-written vocabulary, Gemma's special tokens at Gemma's ids
(<pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4), Gemma's normalizer (spaces become '▁', no prefix space), decoder
and post-processor (<bos> before each sequence, no <eos>), wrapped in transformers' GemmaTokenizerFast so that
`save_pretrained(folder)` writes a folder `AutoTokenizer.from_pretrained(folder)` loads.

The vocabulary: the special tokens, '▁', single characters (letters of both cases, digits, a little punctuation),
then merged pieces, each word of a small music vocabulary built left to right ('▁p', '▁pi', ..., '▁piano'), as many
as fit, then `<unusedN>` fillers (Gemma's own vocabulary has such). A character outside it is <unk> (its UTF-8 byte
tokens are not in the vocabulary, so byte fallback ends in <unk>; consecutive ones fuse into one, as Gemma does).
"""

from __future__ import annotations

import os

from tokenizers import Tokenizer, decoders, models, normalizers, processors
from transformers import GemmaTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")  # ids 0..4, Gemma's
_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-'"
_WORDS = ("piano solo guitar soft acoustic country drums bass jazz rock synth calm violin warm slow fast beat "
          "ambient electric strings melody orchestra").split()


def _vocabulary(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
  """(piece -> id, merges in priority order) of exactly vocab_size pieces."""
  pieces = list(SPECIAL_TOKENS) + ["▁"] + list(_CHARACTERS)
  if vocab_size < len(pieces):
    raise ValueError(f"the tiny Gemma tokenizer needs vocab_size >= {len(pieces)}, got {vocab_size}")
  merges: list[tuple[str, str]] = []
  known = set(pieces)
  for word in _WORDS:
    for end in range(2, len(word) + 2):  # '▁w', '▁wo', ... '▁word'
      piece = "▁" + word[:end - 1]
      if piece in known:
        continue
      if len(pieces) == vocab_size:
        break
      merges.append((piece[:-1], piece[-1]))
      pieces.append(piece)
      known.add(piece)
  pieces += [f"<unused{i}>" for i in range(vocab_size - len(pieces))]
  return {piece: i for i, piece in enumerate(pieces)}, merges


def build_tiny_gemma_tokenizer(vocab_size: int = 128, padding_side: str = "left", add_bos_token: bool = True,
                               model_max_length: int | None = None) -> GemmaTokenizerFast:
  """A deterministic GemmaTokenizerFast of `vocab_size` pieces (see the module's docstring).

  padding_side: 'left' is GemmaTokenizer's own default in transformers 5 (a folder's tokenizer_config.json may say
  otherwise; tests build both). add_bos_token: Gemma's published tokenizers add <bos>; whether Stable Audio 3's
  folder does is not known here, so both can be built. model_max_length: None keeps transformers' 'unbounded'
  value, as Gemma's published config has; the SA3 pipelines cap prompts at 256 tokens anyway."""
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # only the tokenizer is used: no PyTorch notice
  vocab, merges = _vocabulary(vocab_size)
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
  tok.normalizer = normalizers.Replace(" ", "▁")
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
  if add_bos_token:
    tok.post_processor = processors.TemplateProcessing(single="<bos>:0 $A:0", pair="<bos>:0 $A:0 <bos>:1 $B:1",
                                                       special_tokens=[("<bos>", vocab["<bos>"])])
  else:
    tok.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1", special_tokens=[])
  kwargs = {} if model_max_length is None else {"model_max_length": model_max_length}
  return GemmaTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                            unk_token="<unk>", mask_token="<mask>", add_bos_token=add_bos_token, add_eos_token=False,
                            padding_side=padding_side, **kwargs)
