"""The music metrics: agreement with librosa where it has the same quantity, best values for a
clip against itself, melody kept across timbre but not across note order, the invariances, and
gradients of the soft variants. tests/test_instrument_metrics.py tries them on real instruments."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from musickv_jax.metrics import Analysis, METRICS, compare, compare_jit, filterbanks, structure_similarity
from musickv_jax.metrics import features, pitch, timbre
from musickv_jax.metrics.music import pearson

SR = 22050
ANALYSIS = Analysis(sample_rate=SR)
MELODY = [60, 64, 67, 72, 71, 67, 64, 62, 60, 65, 69, 72, 74, 71, 67, 60]
REORDER = [3, 0, 7, 12, 5, 14, 1, 10, 2, 15, 8, 4, 11, 6, 13, 9]
SOFT_TIMBRE = (1.0, 0.4, 0.2)
BRIGHT_TIMBRE = (1.0, 0.7, 0.5, 0.35, 0.25, 0.15)


def synth(notes, harmonics, note_s=0.3, rate=SR):
  """A plucked-string-like melody: each MIDI note a decaying sum of harmonics."""
  t = np.arange(int(note_s * rate)) / rate
  envelope = np.minimum(1.0, t / 0.01) * np.exp(-3.0 * t)
  out = [envelope * sum(a * np.sin(2 * np.pi * 440.0 * 2 ** ((m - 69) / 12) * (k + 1) * t)
                        for k, a in enumerate(harmonics)) for m in notes]
  return (0.3 * np.concatenate(out)).astype(np.float32)


@pytest.fixture(scope="module")
def clips():
  return {"melody": synth(MELODY, SOFT_TIMBRE), "other_timbre": synth(MELODY, BRIGHT_TIMBRE),
          "reordered": synth([MELODY[i] for i in REORDER], SOFT_TIMBRE),
          "transposed": synth([m + 5 for m in MELODY], SOFT_TIMBRE)}


def scores(a, b):
  return {k: float(v) for k, v in compare_jit(jnp.asarray(a), jnp.asarray(b), ANALYSIS).items()}


# ----------------------------------------------------------------------------- librosa


@pytest.mark.fast
@pytest.mark.parametrize("rate,n_fft", [(44100, 2048), (22050, 1024)])
def test_filterbanks_match_librosa(rate, n_fft):
  mel = filterbanks.mel_filterbank(rate, n_fft)
  # both are float64 values rounded to float32 (numpy's exp and log differ by a few float64 ulps between
  # processors): at most one float32 step apart, two allowed
  one_step = 2.0 ** -23
  np.testing.assert_allclose(mel, librosa.filters.mel(sr=rate, n_fft=n_fft), atol=2 * one_step * mel.max())
  chroma = filterbanks.chroma_filterbank(rate, n_fft)
  np.testing.assert_allclose(chroma, librosa.filters.chroma(sr=rate, n_fft=n_fft, tuning=0.0), atol=2 * one_step)


@pytest.mark.fast
def test_features_match_librosa(clips):
  """Measured: mel power 2.2e-7, chroma 7.2e-7 (max abs; chroma is in [0, 1]), onset strength
  3.5e-7 (relative to its maximum), on a melody with noise."""
  rng = np.random.default_rng(0)
  y = clips["melody"][:int(2.3 * SR)] + 0.01 * rng.normal(size=int(2.3 * SR)).astype(np.float32)
  ours = np.asarray(features.mel_power(jnp.asarray(y), ANALYSIS))
  ref = librosa.feature.melspectrogram(y=y, sr=SR).T
  assert ours.shape == ref.shape
  assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
  ours = np.asarray(features.chroma(jnp.asarray(y), ANALYSIS))
  ref = librosa.feature.chroma_stft(y=y, sr=SR, tuning=0.0).T
  assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-5
  ours = np.asarray(features.onset_strength(jnp.asarray(y), ANALYSIS))
  ref = librosa.onset.onset_strength(y=y, sr=SR)
  assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.fast
def test_mfcc_matches_librosa(clips):
  y = clips["melody"][:int(2.3 * SR)]
  ours = np.asarray(features.mfcc(features.mel_power(jnp.asarray(y), ANALYSIS), ANALYSIS))
  ref = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=ANALYSIS.n_mfcc).T
  assert ours.shape == ref.shape
  assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()  # float32 dB of float32 mel power


def test_harmonic_salience_finds_a_weak_fundamental():
  """A tone whose 2nd and 3rd partials are 5x and 3x its fundamental (as on a violin or an oboe):
  the top constant-Q bin is the octave above, or another partial; harmonic summation finds the
  played note."""
  weak_fundamental = (0.2, 1.0, 0.6, 0.4, 0.3, 0.2)
  for midi in (55, 62, 69, 76):
    tone = jnp.asarray(synth([midi], weak_fundamental, note_s=0.6))
    loud = np.asarray(features.sounding(features.level_db(tone, ANALYSIS))) > 0
    f0 = np.asarray(pitch.f0_hz(pitch.salience(tone, ANALYSIS), ANALYSIS))[loud]
    cents = 1200 * np.log2(f0 / (440.0 * 2 ** ((midi - 69) / 12)))
    assert np.all(np.abs(cents) <= pitch.AGREEMENT_CENTS), (midi, cents)
    top_bin = np.asarray(features.constant_q(tone, ANALYSIS)).argmax(axis=1)[loud]
    assert np.all(top_bin != midi - 36), midi  # what cqt1_pcc follows is not the note


def test_constant_q_finds_the_played_note():
  for midi in (48, 60, 69, 84):  # C3, C4, A4, C6
    tone = synth([midi], (1.0, 0.3), note_s=0.6)
    cqt = np.asarray(features.constant_q(jnp.asarray(tone), ANALYSIS))
    loud = cqt.max(axis=1) > 0.1 * cqt.max()
    assert np.all(cqt[loud].argmax(axis=1) == midi - 36), midi  # bin 0 is C2 (MIDI 36)


# ----------------------------------------------------------------------------- properties


@pytest.mark.fast
def test_a_clip_against_itself_scores_best(clips):
  values = scores(clips["melody"], clips["melody"])
  for metric in METRICS:
    assert values[metric.name] == pytest.approx(1.0 if metric.higher_is_better else 0.0, abs=1e-6), metric.name
  silent = np.zeros(SR, np.float32)  # degenerate inputs still give the best value against themselves
  values = scores(silent, silent)
  for metric in METRICS:
    assert values[metric.name] == pytest.approx(1.0 if metric.higher_is_better else 0.0, abs=1e-6), metric.name


def test_melody_kept_across_timbre_scores_higher_than_reordered_notes(clips):
  """Measured: other timbre cqt1_pcc 1.0, chroma_cosine 0.99, chroma_match 0.995; reordered notes
  in the same timbre 0.24, 0.25, 0.19."""
  same_melody = scores(clips["melody"], clips["other_timbre"])
  other_melody = scores(clips["melody"], clips["reordered"])
  for name in ("f0_chroma_accuracy", "cqt1_pcc", "chroma_cosine", "chroma_match", "form_ssm_correlation"):
    assert same_melody[name] > other_melody[name] + 0.3, (name, same_melody[name], other_melody[name])
  assert same_melody["logmel_distance"] > 0.5  # ... while the sound did change
  assert same_melody["timbre_distance"] > 3 * other_melody["timbre_distance"]  # and only the sound


def test_invariances(clips):
  """cqt1_pcc compares contours: a transposition shifts the contour, which a correlation ignores.
  Chroma compares pitch classes, which a transposition changes."""
  values = scores(clips["melody"], clips["transposed"])
  # a Pearson correlation over n frames of float32 contours: about sqrt(n) u typical, n u at worst
  n_frames = Analysis().frames(len(clips["melody"]))
  assert values["cqt1_pcc"] == pytest.approx(1.0, abs=n_frames * 2.0 ** -24)
  assert values["form_ssm_correlation"] > 0.95  # the repetition structure is the same
  assert values["chroma_match"] < 0.2 and values["chroma_cosine"] < 0.5
  assert values["f0_chroma_accuracy"] < 0.2  # a fourth is 500 cents: no pitch agrees
  louder = scores(clips["melody"], 0.5 * clips["melody"])
  for name in ("f0_chroma_accuracy", "cqt1_pcc", "chroma_cosine", "chroma_match", "form_ssm_correlation",
               "onset_correlation"):
    assert louder[name] == pytest.approx(1.0, abs=1e-4), name
  assert louder["timbre_distance"] == pytest.approx(0.0, abs=1e-4)  # the level (MFCC 0) is left out
  octave = scores(clips["melody"], synth([m + 12 for m in MELODY], SOFT_TIMBRE))
  assert octave["f0_chroma_accuracy"] > 0.9  # octaves are folded


def test_clips_of_different_lengths_are_compared_over_the_shorter(clips):
  values = scores(clips["melody"], clips["melody"][: SR])
  assert values["cqt1_pcc"] == pytest.approx(1.0, abs=1e-6) and values["logmel_distance"] == pytest.approx(0.0)


def test_pearson_edge_cases():
  assert float(pearson(jnp.ones(5), jnp.ones(5))) == 1.0
  assert float(pearson(jnp.ones(5), 2 * jnp.ones(5))) == 0.0
  assert float(pearson(jnp.arange(5.0), jnp.ones(5))) == 0.0
  assert float(pearson(jnp.arange(5.0), -jnp.arange(5.0))) == pytest.approx(-1.0)


def test_soft_variants_are_differentiable_and_close(clips):
  a, b = jnp.asarray(clips["melody"]), jnp.asarray(clips["other_timbre"])
  soft = {k: float(v) for k, v in compare(a, b, ANALYSIS, soft=True).items()}
  hard = scores(clips["melody"], clips["other_timbre"])
  for name in ("chroma_cosine", "form_ssm_correlation", "onset_correlation", "f0_chroma_accuracy",
               "timbre_distance"):
    assert soft[name] == pytest.approx(hard[name], abs=0.05), name
  grad = jax.grad(lambda x: structure_similarity(compare(x, b, ANALYSIS, soft=True)))(a)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0


def test_pitch_agreement_conventions():
  """Folded pitch classes agree within AGREEMENT_CENTS either way round the circle; clips that never
  sound together agree only if neither sounds at all."""
  kernel = pitch.agreement_kernel(120)
  assert kernel[0, 5] == 1 and kernel[0, 6] == 0 and kernel[0, 115] == 1 and kernel[0, 114] == 0
  salience = jnp.ones((1, 4, ANALYSIS.pitch_octaves * ANALYSIS.pitch_bins_per_octave))
  on, off = jnp.ones((1, 4)), jnp.zeros((1, 4))
  assert float(pitch.chroma_accuracy(salience, salience, off, off, ANALYSIS)[0]) == 1.0
  assert float(pitch.chroma_accuracy(salience, salience, on, off, ANALYSIS)[0]) == 0.0
  assert float(pitch.chroma_accuracy(salience, salience, on, on, ANALYSIS)[0]) == 1.0


def test_bhattacharyya_distance():
  """0 for equal Gaussians; grows with the gap between means relative to the spreads and with the
  ratio of the spreads; symmetric."""
  one, zero = jnp.ones(()), jnp.zeros(())
  assert float(timbre.bhattacharyya(zero, one, zero, one)) == 0.0
  assert float(timbre.bhattacharyya(zero, one, 2 * one, one)) == pytest.approx(0.5)  # 4 / (4 * 2)
  assert float(timbre.bhattacharyya(zero, one, zero, 2 * one)) == pytest.approx(0.5 * np.log(5 / 4))
  assert float(timbre.bhattacharyya(one, 3 * one, zero, one)) == float(timbre.bhattacharyya(zero, one, one, 3 * one))
