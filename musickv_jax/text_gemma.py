"""Tokenisation of prompts for Stable Audio 3's T5Gemma encoder, with the checkpoint's Gemma tokenizer (no torch).

`tokenize_gemma` gives the encoder exactly what diffusers' StableAudio3Pipeline.encode_prompt gives it (the
audio-to-audio and inpainting pipelines copy that method): the tokenizer called with padding="max_length",
truncation=True and max_length = min(the tokenizer's model_max_length, 256), so the padding side, the special
tokens (Gemma's <bos>) and the truncation side are whatever the tokenizer folder's own config says. Nothing is
masked or changed afterwards: the mask goes to the DiT with the hidden states.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musickv_jax.errors import TokenizerError

log = logging.getLogger(__name__)

PIPELINE_MAX_LENGTH = 256  # StableAudio3Pipeline.encode_prompt's cap (it cites the reference model_config.json)


def load_gemma_tokenizer(directory: str | Path):
  """The Gemma tokenizer of a folder with tokenizer.json (an SA3 folder's `tokenizer/`)."""
  directory = Path(directory)
  if not (directory / "tokenizer.json").is_file():
    raise TokenizerError(f"{directory}: no Gemma tokenizer found (expected tokenizer.json)")
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # only the tokenizer is used: no PyTorch notice
  from transformers import GemmaTokenizerFast  # deferred: the rest of the library does not need it

  try:
    return GemmaTokenizerFast.from_pretrained(str(directory))
  except (OSError, ValueError) as e:
    raise TokenizerError(f"{directory}: cannot load the Gemma tokenizer ({str(e).splitlines()[0]})") from None


def prompt_length(tokenizer, max_length: int = PIPELINE_MAX_LENGTH) -> int:
  """Tokens each prompt is padded / truncated to: min(model_max_length, max_length), the pipeline's rule."""
  return int(min(getattr(tokenizer, "model_max_length", max_length), max_length))


def tokenize_gemma(tokenizer, prompts: str | Sequence[str], max_length: int = PIPELINE_MAX_LENGTH
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Prompts -> (ids, mask), each (len(prompts), prompt_length(tokenizer, max_length)) int32, as the SA3 pipeline
  tokenizes them (the empty prompt "" is CFG's unconditional one). Truncation is logged, not silent."""
  prompts = [prompts] if isinstance(prompts, str) else list(prompts)
  length = prompt_length(tokenizer, max_length)
  enc = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="np")
  full = tokenizer(prompts, padding=False, truncation=False, verbose=False)["input_ids"]
  for number, ids in enumerate(full, start=1):
    if len(ids) > length:
      left = getattr(tokenizer, "truncation_side", "right") == "left"
      cut = ids[:len(ids) - length] if left else ids[length:]
      log.warning("prompt %d is %d tokens long; the text encoder reads %d, so its %s was cut: %r", number,
                  len(ids), length, "start" if left else "end",
                  _shorten(tokenizer.decode(cut, skip_special_tokens=True)))
  return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def _shorten(text: str, limit: int = 80) -> str:
  return text if len(text) <= limit else text[:limit - 3] + "..."
