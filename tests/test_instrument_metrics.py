"""The music metrics on real instrument sounds: three melodies with one rhythm, each rendered by
FluidSynth (FluidR3 GM soundfont) on piano, nylon guitar, violin, flute and clarinet
(tests/instruments.py). A melody metric must score every same-melody / other-instrument pair
above every other-melody / same-instrument pair; a timbre metric the opposite. The margins
(tests/instruments.margin: the worst pair of one kind against the best of the other, in the
metric's units) are in docs/research.md, with where cqt1_pcc, chroma and the spectral distances fail."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from musickv_jax.metrics import Analysis, METRICS, compare, compare_jit, features, pitch
from tests import instruments

pytestmark = pytest.mark.skipif(instruments.missing() is not None, reason=str(instruments.missing()))

ANALYSIS = Analysis(sample_rate=instruments.RATE)
HIGHER = {m.name: m.higher_is_better for m in METRICS}
# The instruments of the issue that reported cqt1_pcc's failure. Chroma ranks the melodies there but
# not with the clarinet, whose third partial (a twelfth above) outweighs the fundamental in chroma.
ISSUE_INSTRUMENTS = ("piano", "guitar", "violin", "flute")
PYIN_FRAME = 2048  # librosa.pyin's default frame at 44.1 kHz


@pytest.fixture(scope="session")
def renders(tmp_path_factory):
  return instruments.render_all(tmp_path_factory.mktemp("renders"))


@pytest.fixture(scope="session")
def scored(renders):
  """(pairs, {metric: values over same-melody pairs}, {metric: values over same-instrument pairs})."""
  kinds = instruments.pairs(list(renders))
  return kinds, instruments.metric_values(renders, kinds.same_melody), instruments.metric_values(
      renders, kinds.same_instrument)


def _restricted(pair_list, values, allowed):
  keep = np.array([a[1] in allowed and b[1] in allowed for a, b in pair_list])
  return {name: v[keep] for name, v in values.items()}


def test_the_renders_are_the_melodies(renders):
  """Each render holds its notes: sounding, as long as the rhythm plus the release, and different."""
  length = round((sum(instruments.RHYTHM) + instruments.TAIL_S) * instruments.RATE)
  for key, audio in renders.items():
    assert audio.shape == (length,) and np.abs(audio).max() > 0.01, key
  assert not np.allclose(renders[("A", "piano")], renders[("B", "piano")])


def test_f0_chroma_accuracy_ranks_the_same_melody_above_the_same_instrument(scored):
  """Measured: same melody 0.862..0.985, other melody 0.062..0.353 (the 0.35 are melodies A and B,
  which share two notes, 36% of the sounding time): margin +0.51."""
  _, melody, instrument = scored
  margin = instruments.margin(melody["f0_chroma_accuracy"], instrument["f0_chroma_accuracy"], True)
  assert margin > 0, margin


def test_the_structure_score_melody_ranks_the_same_melody_above_the_same_instrument(scored):
  """The probe's melody, mean(f0_chroma_accuracy, chroma_cosine), holds on all five instruments even
  though chroma_cosine alone does not (measured margin +0.142; with cqt1_pcc in its place it was -0.589)."""
  _, melody, instrument = scored
  probe_melody = [0.5 * (v["f0_chroma_accuracy"] + v["chroma_cosine"]) for v in (melody, instrument)]
  assert instruments.margin(*probe_melody, True) > 0


@pytest.mark.parametrize("name", ["chroma_cosine", "chroma_match"])
def test_chroma_ranks_the_melodies_on_the_issue_instruments(scored, name):
  """Measured on piano, guitar, violin and flute: chroma_cosine +0.34, chroma_match +0.31."""
  kinds, melody, instrument = scored
  melody = _restricted(kinds.same_melody, melody, ISSUE_INSTRUMENTS)
  instrument = _restricted(kinds.same_instrument, instrument, ISSUE_INSTRUMENTS)
  assert instruments.margin(melody[name], instrument[name], True) > 0


def test_timbre_distance_ranks_the_same_instrument_closer(scored):
  """Measured: same melody on two instruments 0.159..1.389 (closest: piano and nylon guitar), other
  melody on one instrument 0.014..0.066: margin +0.093, the closest instruments 2.4 times as far
  apart as the farthest melodies."""
  _, melody, instrument = scored
  margin = instruments.margin(instrument["timbre_distance"], melody["timbre_distance"], False)
  assert margin > 0, margin


def test_pitch_track_agrees_with_pyin(renders):
  """Our f0 (the most salient harmonic-summation candidate) against librosa.pyin's on each
  instrument, on the frames both call pitched, without folding octaves. Where a note changes, our
  longer window (pitch_n_fft) hears two notes on (pitch_n_fft - PYIN_FRAME) / hop = 4 frames where
  pyin's hears one: those may disagree, the rest must not (the bound is 0.85 to 0.87). Measured:
  0.966 (flute, clarinet) to 0.997 (guitar) agree within 50 cents, none an octave off."""
  changes = len(instruments.RHYTHM)  # every note ends in another note, the rest or the release
  ambiguous = (ANALYSIS.pitch_n_fft - PYIN_FRAME) // ANALYSIS.hop_length
  for instrument in instruments.INSTRUMENTS:
    audio = renders[("A", instrument)]
    # pyin searches C3..C7, the melodies' G4..A5 with more than an octave either side
    reference, voiced, _ = librosa.pyin(audio, fmin=130.81, fmax=2093.0, sr=instruments.RATE,
                                        frame_length=PYIN_FRAME, hop_length=ANALYSIS.hop_length)
    ours = np.asarray(pitch.f0_hz(pitch.salience(jnp.asarray(audio), ANALYSIS), ANALYSIS))
    sounding = np.asarray(features.sounding(features.level_db(jnp.asarray(audio), ANALYSIS))) > 0
    both = voiced & sounding
    assert ours.shape == reference.shape and both.sum() > 0.5 * len(both), instrument
    cents = 1200 * np.log2(ours[both] / reference[both])
    agree = np.mean(np.abs(cents) <= pitch.AGREEMENT_CENTS)
    assert agree >= 1 - ambiguous * changes / both.sum(), (instrument, agree)


def test_soft_melody_metric_is_differentiable_and_close_on_real_renders(renders):
  """The optimiser's soft path (compare(..., soft=True)): a finite, non-zero gradient of the soft
  f0_chroma_accuracy, which stays within a tenth of its range of the exact metric (measured: 0.068
  at most over every pair of the renders, 0.01 on average). On the first two seconds (six notes),
  to keep the gradient quick; tests/test_metrics.py takes the structure score's gradient."""
  span = 2 * instruments.RATE
  a, b = jnp.asarray(renders[("A", "violin")][:span]), jnp.asarray(renders[("A", "clarinet")][:span])

  def soft_accuracy(x):
    return compare(x, b, ANALYSIS, soft=True)["f0_chroma_accuracy"]

  exact = float(compare_jit(a, b, ANALYSIS)["f0_chroma_accuracy"])
  value, grad = jax.jit(jax.value_and_grad(soft_accuracy))(a)
  assert float(value) == pytest.approx(exact, abs=0.1)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
