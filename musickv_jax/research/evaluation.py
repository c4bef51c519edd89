"""musickv-evaluate's scoring of audio files: each file read as the metrics hear it (mono at the
analysis rate), then scored against the source (metrics.scoring: the metrics, editability against a
plain generation, learned scorers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from musickv_jax.audio import load_audio
from musickv_jax.errors import SettingsError
from musickv_jax.metrics import Analysis
from musickv_jax.metrics.scorers import TextAudioScorer
from musickv_jax.metrics.scoring import EDITABILITY, PLAIN_DISTANCE, EditScores, Evaluation, evaluate_audio, score

__all__ = ["EDITABILITY", "PLAIN_DISTANCE", "EditScores", "Evaluation", "evaluate", "evaluate_audio"]


def _read(path: str | Path, sample_rate: int) -> np.ndarray:
  loaded = load_audio(path, sample_rate=sample_rate, max_seconds=math.inf)
  return loaded.audio.mean(axis=0)


def evaluate(source: str | Path, edits: Sequence[str | Path], *, plain: str | Path | None = None,
             edit_prompts: Sequence[str] = (), scorers: Sequence[TextAudioScorer] = (),
             analysis: Analysis = Analysis()) -> Evaluation:
  """Scores each edit file against the source file (audio files at any rate; read as mono at the
  analysis rate). edit_prompts: one per edit, or one for all (needed by scorers)."""
  if not edits:
    raise SettingsError("{field}: give at least one edit to score", field="edits")
  rate = analysis.sample_rate
  return score(_read(source, rate), [(str(path), _read(path, rate)) for path in edits],
               None if plain is None else (str(plain), _read(plain, rate)), edit_prompts, scorers, analysis)


