"""Tokenisation of prompts with the checkpoint's T5 tokenizer (transformers, no torch)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from transformers import T5TokenizerFast

from musickv_jax.errors import TokenizerError

log = logging.getLogger(__name__)


def load_tokenizer(directory: str | Path, max_length: int | None = None):
  """A T5 tokenizer from a folder with tokenizer.json (or spiece.model, which needs sentencepiece)."""
  directory = Path(directory)
  if not directory.is_dir() or not any((directory / f).is_file() for f in ("tokenizer.json", "spiece.model")):
    raise TokenizerError(f"{directory}: no tokenizer found (expected tokenizer.json or spiece.model)")
  # Deferred, and the T5 class directly: AutoTokenizer would import far more of transformers.
  # Only its tokenizer is used here, so its notice that PyTorch is absent is noise.
  os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

  try:
    tokenizer = T5TokenizerFast.from_pretrained(str(directory))
  except (OSError, ValueError, ImportError) as e:
    raise TokenizerError(f"{directory}: cannot load the tokenizer ({str(e).splitlines()[0]}); a folder with only "
                         "spiece.model needs the sentencepiece package") from None
  if max_length is not None:
    tokenizer.model_max_length = max_length
  return tokenizer


def tokenize(tokenizer, prompts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
  """Prompts -> (input_ids, attention_mask), each (len(prompts), max_length) int32, padded and
  truncated to max_length like the reference pipelines. Truncation is logged, not silent."""
  enc = tokenizer(list(prompts), padding="max_length", max_length=max_length, truncation=True, return_tensors="np")
  full = tokenizer(list(prompts), padding=False, truncation=False, verbose=False)["input_ids"]
  for number, ids in enumerate(full, start=1):
    if len(ids) > max_length:
      log.warning("prompt %d is %d tokens long; the model reads %d, so this end was cut: %r", number, len(ids),
                  max_length, _shorten(tokenizer.decode(ids[max_length - 1:], skip_special_tokens=True)))
  return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def _shorten(text: str, limit: int = 80) -> str:
  return text if len(text) <= limit else text[:limit - 3] + "..."
