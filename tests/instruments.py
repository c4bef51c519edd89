"""Real instrument sounds for the metric tests: melodies written here as Standard MIDI Files and
rendered by FluidSynth with the FluidR3 General MIDI soundfont (Debian packages `fluidsynth` and
`fluid-soundfont-gm`; .ci/run installs them).

  python -m tests.instruments   prints the tables of every metric on these renders (docs/research.md)
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
RATE = 44100  # the rate musickv-evaluate analyses at
TICKS_PER_QUARTER = 480
TEMPO_US_PER_QUARTER = 500_000  # 120 bpm: 960 ticks a second
TAIL_S = 0.6  # kept after the last note: its release

# One rhythm (seconds; None in a melody is a rest) shared by every melody, so that onsets, decays and
# rests cannot tell the melodies apart: only the pitches can. All in C major within G4..A5, a range
# every instrument below plays. B shares two notes with A (the 3rd and the long last one), C one
# with A (the 5th) and one with B (the 9th), as melodies in one key do.
RHYTHM = (0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.75)
MELODIES = {
    "A": (72, 76, 79, 77, 76, 74, None, 72, 74, 76, 79, 72),
    "B": (69, 72, 79, 76, 74, 72, None, 71, 69, 67, 74, 72),
    "C": (67, 71, 74, 72, 76, 67, None, 69, 69, 72, 76, 79),
}
# General MIDI programs (0-based): struck and plucked strings, a bowed string, an edge-blown and a
# reed wind (the violin's and the flute's fundamentals are often weaker than a higher partial; the
# clarinet's even partials are weak).
INSTRUMENTS = {"piano": 0, "guitar": 24, "violin": 40, "flute": 73, "clarinet": 71}


def missing() -> str | None:
  """Why the renders cannot be made here, or None."""
  if shutil.which("fluidsynth") is None:
    return "fluidsynth is not installed (Debian: apt-get install fluidsynth)"
  if not SOUNDFONT.is_file():
    return f"the General MIDI soundfont {SOUNDFONT} is missing (Debian: apt-get install fluid-soundfont-gm)"
  return None


def _varlen(value: int) -> bytes:
  """A MIDI variable-length quantity: 7 bits a byte, most significant first, high bit = more."""
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append(0x80 | (value & 0x7F))
    value >>= 7
  return bytes(reversed(out))


def midi_file(pitches: Sequence[int | None], durations_s: Sequence[float], program: int) -> bytes:
  """A format-0 Standard MIDI File: one track on channel 0 playing the notes (velocity 100) one
  after another with `program`; None is a rest."""
  ticks_per_s = TICKS_PER_QUARTER * 1e6 / TEMPO_US_PER_QUARTER
  events = bytearray(_varlen(0) + b"\xff\x51\x03" + TEMPO_US_PER_QUARTER.to_bytes(3, "big"))
  events += _varlen(0) + bytes([0xC0, program])
  wait = 0
  for pitch, duration in zip(pitches, durations_s, strict=True):
    ticks = round(duration * ticks_per_s)
    if pitch is None:
      wait += ticks
      continue
    events += _varlen(wait) + bytes([0x90, pitch, 100]) + _varlen(ticks) + bytes([0x80, pitch, 0])
    wait = 0
  events += _varlen(wait + round(TAIL_S * ticks_per_s)) + b"\xff\x2f\x00"  # end of track after the tail
  header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, TICKS_PER_QUARTER)
  return header + b"MTrk" + struct.pack(">I", len(events)) + bytes(events)


def render(pitches: Sequence[int | None], program: int, workdir: Path) -> np.ndarray:
  """Mono float32 audio at RATE of the melody in RHYTHM, cut at the end of its tail (FluidSynth
  keeps rendering while any voice or reverb rings)."""
  import soundfile as sf

  midi = workdir / f"{program}_{'_'.join(str(p) for p in pitches)}.mid"
  wav = midi.with_suffix(".wav")
  midi.write_bytes(midi_file(pitches, RHYTHM, program))
  subprocess.run(["fluidsynth", "-ni", "-q", "-T", "wav", "-r", str(RATE), "-F", str(wav), str(SOUNDFONT), str(midi)],
                 check=True, capture_output=True)
  audio, rate = sf.read(wav, dtype="float32", always_2d=True)
  assert rate == RATE, rate
  return audio.mean(axis=1)[:round((sum(RHYTHM) + TAIL_S) * RATE)]


def render_all(workdir: Path) -> dict[tuple[str, str], np.ndarray]:
  """{(melody, instrument): audio} for every melody on every instrument."""
  return {(melody, instrument): render(pitches, program, workdir)
          for melody, pitches in MELODIES.items() for instrument, program in INSTRUMENTS.items()}


@dataclasses.dataclass(frozen=True)
class Pairs:
  """The two kinds of pair the metrics must tell apart (each an unordered pair of render keys)."""

  same_melody: tuple  # the same melody on two instruments: melody kept, timbre moved
  same_instrument: tuple  # two melodies on the same instrument: melody moved, timbre kept


def pairs(keys: Sequence[tuple[str, str]]) -> Pairs:
  same_melody, same_instrument = [], []
  for a, b in itertools.combinations(keys, 2):
    if a[0] == b[0]:
      same_melody.append((a, b))
    elif a[1] == b[1]:
      same_instrument.append((a, b))
  return Pairs(tuple(same_melody), tuple(same_instrument))


def metric_values(clips: dict[tuple[str, str], np.ndarray], pair_list) -> dict[str, np.ndarray]:
  """{metric: (pairs,)} of compare_jit(a, b) for each pair (a, b) of render keys."""
  import jax.numpy as jnp

  from musickv_jax.metrics import Analysis, compare_jit

  analysis = Analysis(sample_rate=RATE)
  rows = [{k: float(v) for k, v in compare_jit(jnp.asarray(clips[a]), jnp.asarray(clips[b]), analysis).items()}
          for a, b in pair_list]
  return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def margin(closer: np.ndarray, farther: np.ndarray, higher_is_better: bool) -> float:
  """How far the metric puts every `closer` pair on the near side of every `farther` pair, in its
  own units: min(closer) - max(farther) for a similarity, min(farther) - max(closer) for a
  distance. Positive: the ranking holds for each pair against each."""
  if higher_is_better:
    return float(np.min(closer) - np.max(farther))
  return float(np.min(farther) - np.max(closer))


def table(clips: dict[tuple[str, str], np.ndarray]) -> str:
  """Markdown: every metric's range over each kind of pair and the margin between them."""
  from musickv_jax.metrics import METRICS

  kinds = pairs(list(clips))
  melody = metric_values(clips, kinds.same_melody)
  instrument = metric_values(clips, kinds.same_instrument)
  lines = ["| metric | better | same melody, other instrument: min / mean / max | "
           "other melody, same instrument: min / mean / max | melody margin | timbre margin |",
           "|---|---|---|---|---|---|"]
  for metric in METRICS:
    a, b = melody[metric.name], instrument[metric.name]
    melody_margin = margin(a, b, metric.higher_is_better)  # same melody closer: it follows the notes
    timbre_margin = margin(b, a, metric.higher_is_better)  # same instrument closer: it follows the sound
    lines.append(f"| `{metric.name}` | {'higher' if metric.higher_is_better else 'lower'} | "
                 f"{a.min():.3f} / {a.mean():.3f} / {a.max():.3f} | {b.min():.3f} / {b.mean():.3f} / {b.max():.3f} | "
                 f"{melody_margin:+.3f} | {timbre_margin:+.3f} |")
  return "\n".join(lines)


def table_against(clips: dict[tuple[str, str], np.ndarray], source: tuple[str, str] = ("A", "piano")) -> str:
  """Markdown: every metric of each render of the source's melody on another instrument, and of
  each other melody on the source's instrument, against the source."""
  from musickv_jax.metrics import METRICS

  others = [k for k in clips if (k[0] == source[0]) != (k[1] == source[1])]
  others.sort(key=lambda k: (k[0] != source[0], k))
  values = metric_values(clips, [(source, k) for k in others])
  lines = [f"| against {source[0]} on {source[1]} | " + " | ".join(f"`{m.name}`" for m in METRICS) + " |",
           "|---|" + "---|" * len(METRICS)]
  for i, (melody, instrument) in enumerate(others):
    lines.append(f"| {melody} on {instrument} | " + " | ".join(f"{values[m.name][i]:.3f}" for m in METRICS) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  reason = missing()
  if reason:
    raise SystemExit(reason)
  with tempfile.TemporaryDirectory() as tmp:
    clips = render_all(Path(tmp))
    print(table(clips), table_against(clips), sep="\n\n")
