"""Learned scorers (e.g. CLAP text-audio similarity, the "editability" of the music-editing
papers) need pretrained weights that do not ship with musickv-jax. This is the interface a user
with such weights implements to plug one in; nothing here fakes one.

  class MyClap:
    name = "clap"
    higher_is_better = True
    def score(self, audio, sample_rate, texts):  # audio (n, channels, samples), texts: n prompts
      ...                                         # -> (n,) float scores

  musickv-evaluate ... --scorer=my_package.scorers:MyClap   (a class or factory taking no arguments)

A scorer that is also differentiable can implement `score_jax(audio, sample_rate, texts)` with
JAX operations; the schedule optimiser then uses it as its editability objective.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from musickv_jax.errors import SettingsError


@runtime_checkable
class TextAudioScorer(Protocol):
  name: str
  higher_is_better: bool

  def score(self, audio: np.ndarray, sample_rate: int, texts: Sequence[str]) -> np.ndarray:
    """audio (n, channels, samples) float32, one text per clip -> (n,) scores."""


def load_scorer(spec: str) -> TextAudioScorer:
  """'package.module:name' -> an instance (name is a class or a factory taking no arguments)."""
  module_name, _, attribute = spec.partition(":")
  if not module_name or not attribute:
    raise SettingsError(f"{{field}} {spec!r} must look like package.module:ClassName", field="scorer")
  try:
    factory = getattr(importlib.import_module(module_name), attribute)
  except (ImportError, AttributeError) as e:
    raise SettingsError(f"{{field}} {spec!r} cannot be imported ({e})", field="scorer") from None
  scorer = factory()
  if not isinstance(scorer, TextAudioScorer):
    raise SettingsError(f"{{field}} {spec!r} is not a scorer: it needs name, higher_is_better and "
                        "score(audio, sample_rate, texts)", field="scorer")
  return scorer
