"""What reading a checkpoint gives, whatever its layout: our config, one state dict per component,
where each came from, where the tokenizer lives."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from musickv_jax.config import ModelConfig


@dataclasses.dataclass
class SourceCheckpoint:
  layout: str
  config: ModelConfig
  state_dicts: dict[str, dict[str, np.ndarray]]
  origins: dict[str, str]  # component -> human-readable origin (files)
  tokenizer_dir: Path
  ignore: dict[str, Callable[[str], bool]]
  scheduler: dict | None = None
