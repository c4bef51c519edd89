"""What reading a checkpoint gives, whatever its layout: our config, one state dict per component,
where each came from, where the tokenizer lives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from musickv_jax.config import ModelConfig
from musickv_jax.errors import ConversionError


@dataclasses.dataclass
class SourceCheckpoint:
  layout: str
  config: ModelConfig
  state_dicts: dict[str, dict[str, np.ndarray]]
  origins: dict[str, str]  # component -> human-readable origin (files)
  tokenizer_dir: Path
  ignore: dict[str, Callable[[str], bool]]
  scheduler: dict | None = None


def text_encoder_folders(t5_dir: Path, encoder: str, checkpoint: str) -> tuple[Path, Path]:
  """(the text encoder's weights and config folder, its tokenizer folder) from a folder the user
  gave: the encoder's own folder (config.json), or a diffusers checkpoint's text_encoder/ and
  tokenizer/. `encoder` and `checkpoint` name the two kinds in the message ("a T5 model folder",
  "a diffusers checkpoint")."""
  if not t5_dir.is_dir():
    raise ConversionError(f"{{field}} {t5_dir}: no such directory", field="t5_dir")
  if (t5_dir / "text_encoder" / "config.json").is_file() and (t5_dir / "tokenizer").is_dir():
    return t5_dir / "text_encoder", t5_dir / "tokenizer"
  if (t5_dir / "config.json").is_file():
    return t5_dir, t5_dir
  raise ConversionError(f"{{field}} {t5_dir}: looked for config.json ({encoder}) and text_encoder/config.json "
                        f"with tokenizer/ ({checkpoint}); found neither", field="t5_dir")
