"""Scoring edits against their source (clips in memory; musickv-evaluate reads them from files,
research.evaluation): the music metrics of each edit (musickv_jax.metrics), the
editability proxy against a plain generation, and any plugged-in learned scorer.

Editability without a learned scorer: `plain` is the edit prompt generated without injection (what
the edit would sound like if it kept nothing of the source). How far the edit moved from the
source toward it, in log-mel (timbre) space:
  editability = 1 - logmel_distance(edit, plain) / logmel_distance(source, plain)
1: the edit sounds like the plain generation; 0: no closer to it than the source; below 0: farther.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from musickv_jax.audio import resample
from musickv_jax.errors import SettingsError
from musickv_jax.finite import require_finite
from musickv_jax.metrics.features import Analysis
from musickv_jax.metrics.music import METRICS, compare_jit
from musickv_jax.metrics.scorers import TextAudioScorer

EDITABILITY = "editability"
PLAIN_DISTANCE = "plain_logmel_distance"


@dataclasses.dataclass
class EditScores:
  file: str
  metrics: dict[str, float]
  compared_s: float  # seconds compared with the source: the common first part when their lengths differ


@dataclasses.dataclass
class Evaluation:
  edits: list[EditScores]
  higher_is_better: dict[str, bool]
  notes: list[str] = dataclasses.field(default_factory=list)  # what the caller should be told (lengths that differ)

  def to_json_dict(self) -> dict:
    return {"edits": [{"file": e.file, "metrics": e.metrics, "compared_s": e.compared_s} for e in self.edits],
            "higher_is_better": self.higher_is_better}

  def table(self) -> str:
    names = list(self.higher_is_better)
    width = max(12, *(len(n) + 2 for n in names))
    header = "edit".ljust(28) + "".join(f"{n} {'^' if self.higher_is_better[n] else 'v'}".rjust(width) for n in names)
    rows = [Path(e.file).name[:27].ljust(28) + "".join(f"{e.metrics[n]:{width}.4f}" for n in names)
            for e in self.edits]
    return "\n".join([header, *rows])


def _common_part(label: str, audio: np.ndarray, source: np.ndarray, rate: int, notes: list[str]) -> float:
  """Seconds of `audio` and the source that are compared (the metrics align clips to the shorter
  one); when their lengths differ, a note that says so."""
  n = min(audio.shape[-1], source.shape[-1])
  if audio.shape[-1] != source.shape[-1]:
    notes.append(f"{label} is {audio.shape[-1] / rate:.2f} s long and the source {source.shape[-1] / rate:.2f} s; "
                 f"comparing their common first {n / rate:.2f} s")
  return round(n / rate, 4)


def evaluate_audio(source: np.ndarray, edits: Sequence[tuple[str, np.ndarray]], sample_rate: int, *,
                   edit_prompts: Sequence[str] = (), scorers: Sequence[TextAudioScorer] = (),
                   analysis: Analysis = Analysis()) -> Evaluation:
  """`evaluate` of clips in memory: source and each (label, edit) (channels, samples) at
  sample_rate, heard as musickv-evaluate hears their files (resampled to the analysis rate, mono)."""
  if not edits:
    raise SettingsError("{field}: give at least one edit to score", field="edits")

  def heard(audio: np.ndarray) -> np.ndarray:
    return resample(np.asarray(audio, np.float32), sample_rate, analysis.sample_rate).mean(axis=0)

  return score(heard(source), [(label, heard(audio)) for label, audio in edits], None, edit_prompts, scorers,
                analysis)


def score(source_audio: np.ndarray, edits: Sequence[tuple[str, np.ndarray]], plain: tuple[str, np.ndarray] | None,
           edit_prompts: Sequence[str], scorers: Sequence[TextAudioScorer], analysis: Analysis) -> Evaluation:
  """Mono clips at the analysis rate, scored (see the module)."""
  if scorers and len(edit_prompts) not in (1, len(edits)):
    raise SettingsError(f"{{field}}: give one prompt per edit ({len(edits)}) or one for all, got "
                        f"{len(edit_prompts)}", field="edit_prompts")
  rate = analysis.sample_rate
  plain_audio = None if plain is None else plain[1]
  source_to_plain, notes = None, []
  if plain_audio is not None:
    _common_part(f"plain {plain[0]}", plain_audio, source_audio, rate, notes)
    source_to_plain = float(compare_jit(jnp.asarray(source_audio), jnp.asarray(plain_audio), analysis)[
        "logmel_distance"])
  prompts = list(edit_prompts) * len(edits) if len(edit_prompts) == 1 else list(edit_prompts)
  higher = {m.name: m.higher_is_better for m in METRICS}
  results = []
  for i, (label, audio) in enumerate(edits):
    compared_s = _common_part(label, audio, source_audio, rate, notes)
    values = {k: float(v) for k, v in compare_jit(jnp.asarray(source_audio), jnp.asarray(audio), analysis).items()}
    if plain_audio is not None:
      to_plain = float(compare_jit(jnp.asarray(audio), jnp.asarray(plain_audio), analysis)["logmel_distance"])
      values[PLAIN_DISTANCE] = to_plain
      values[EDITABILITY] = 1.0 - to_plain / source_to_plain if source_to_plain > 0 else 0.0
    for scorer in scorers:
      score = scorer.score(audio[None, None], rate, [prompts[i]])
      values[scorer.name] = float(np.asarray(score).reshape(-1)[0])
    require_finite(values, stage="metrics", what=f"scores of {label}")
    results.append(EditScores(file=label, metrics=values, compared_s=compared_s))
  if plain_audio is not None:
    higher |= {PLAIN_DISTANCE: False, EDITABILITY: True}
  higher |= {s.name: bool(s.higher_is_better) for s in scorers}
  return Evaluation(edits=results, higher_is_better=higher, notes=notes)
