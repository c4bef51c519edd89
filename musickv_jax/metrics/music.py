"""How much of a clip's music another clip keeps: melody, harmony, form, rhythm, and how far its
sound (timbre, spectrum) moved. Pure JAX: jit-able and differentiable (the hard, argmax-based
metrics have soft twins for gradients).

Each metric compares clip `a` with clip `b` (mono, (..., samples), the same sample rate; the
longer is cut to the shorter). A clip compared with itself scores each metric at its best value.

| name                 | measures                                        | range      | best | invariant to                  |
|----------------------|-------------------------------------------------|------------|------|-------------------------------|
| f0_chroma_accuracy   | melody: fraction of frames sounding in both     | [0, 1]     | 1    | timbre, octave, loudness;     |
|                      | whose harmonic-summation pitches agree within   |            |      | NOT transposition             |
|                      | 50 cents, octaves folded (metrics.pitch)        |            |      |                               |
| cqt1_pcc             | melody: Pearson correlation of the top-1        | [-1, 1]    | 1    | transposition (a shift of the |
|                      | constant-Q bin per frame ("CQT1-PCC")           |            |      | contour), loudness, timbre*   |
| chroma_cosine        | harmony: mean per-frame cosine of chroma        | [0, 1]     | 1    | octave, loudness; NOT transp. |
| chroma_match         | melody/harmony: fraction of frames whose        | [0, 1]     | 1    | octave, loudness; NOT transp. |
|                      | dominant pitch class is the same                |            |      |                               |
| form_ssm_correlation | form: Pearson correlation of the chroma self-   | [-1, 1]    | 1    | transposition, loudness       |
|                      | similarity matrices (chroma pooled per second)  |            |      |                               |
| onset_correlation    | rhythm: Pearson correlation of onset envelopes  | [-1, 1]    | 1    | pitch, loudness offset        |
| timbre_distance      | timbre: Bhattacharyya distance of the MFCC      | [0, inf)   | 0    | melody, loudness              |
|                      | distributions over the clips (metrics.timbre)   |            |      |                               |
| logmel_distance      | spectrum: mean |ln mel_a - ln mel_b|            | [0, inf)   | 0    | nothing                       |
| mrstft_distance      | spectrum at 3 resolutions: spectral convergence | [0, inf)   | 0    | nothing                       |
|                      | + mean |ln|S_a| - ln|S_b||                      |            |      |                               |
(* only while the fundamental is the strongest partial: on real violin, flute or guitar the top
bin jumps between partials, and melodies that share a rhythm correlate through their onsets,
decays and rests. On FluidSynth renders, another melody on the same piano scores above the same
melody on a violin; see docs/research.md. Kept because the editing papers report it.)
logmel_distance and mrstft_distance measure "different audio", not "different timbre": another
melody on the same instrument moves them as much as another instrument does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from musickv_jax.metrics import features, pitch, timbre
from musickv_jax.metrics.features import Analysis

Array = jax.Array
LOG_EPS = 1e-5  # floor inside the logs of the spectral distances (about -100 dB re full-scale power)
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) of mrstft_distance
SOFT_CONTOUR_TEMPERATURE = 0.5  # in log-magnitude units: the soft contour's sharpness
SOFT_MATCH_TEMPERATURE = 0.1  # in chroma units (frame maximum 1): the soft dominant pitch class
SMOOTH_ABS = 1e-2  # the soft |x| of the smooth distances: sqrt(x^2 + SMOOTH_ABS^2) - SMOOTH_ABS


@dataclasses.dataclass(frozen=True)
class MetricInfo:
  name: str
  higher_is_better: bool
  aspect: str  # melody, harmony, form, rhythm, timbre, spectrum
  description: str


METRICS = (
    MetricInfo("f0_chroma_accuracy", True, "melody",
               "fraction of co-sounding frames whose harmonic-summation pitches agree within 50 cents, octaves folded"),
    MetricInfo("cqt1_pcc", True, "melody", "Pearson correlation of the top-1 constant-Q bin contours"),
    MetricInfo("chroma_cosine", True, "harmony", "mean per-frame cosine similarity of chroma"),
    MetricInfo("chroma_match", True, "melody", "fraction of frames with the same dominant pitch class"),
    MetricInfo("form_ssm_correlation", True, "form", "correlation of chroma self-similarity matrices"),
    MetricInfo("onset_correlation", True, "rhythm", "correlation of onset-strength envelopes"),
    MetricInfo("timbre_distance", False, "timbre", "Bhattacharyya distance of the clips' MFCC distributions"),
    MetricInfo("logmel_distance", False, "spectrum", "mean absolute difference of log mel spectrograms"),
    MetricInfo("mrstft_distance", False, "spectrum", "multi-resolution STFT distance"),
)
STRUCTURE_METRICS = ("f0_chroma_accuracy", "chroma_cosine", "form_ssm_correlation", "onset_correlation")


def pearson(a: Array, b: Array, axis: int = -1) -> Array:
  """Pearson correlation along `axis`. Two constant sequences correlate 1 if they are equal and 0
  otherwise (the formula is 0 / 0 there); one constant sequence correlates 0."""
  da = a - jnp.mean(a, axis=axis, keepdims=True)
  db = b - jnp.mean(b, axis=axis, keepdims=True)
  va, vb = jnp.sum(da * da, axis=axis), jnp.sum(db * db, axis=axis)
  tiny = 1e-12 * (1.0 + jnp.sum(a * a, axis=axis) + jnp.sum(b * b, axis=axis))
  flat_a, flat_b = va <= tiny, vb <= tiny
  safe = jnp.where(flat_a | flat_b, 1.0, va * vb)
  r = jnp.sum(da * db, axis=axis) * jax.lax.rsqrt(safe)
  both_flat = jnp.where(jnp.all(jnp.abs(a - b) <= 1e-6 * (1.0 + jnp.abs(b)), axis=axis), 1.0, 0.0)
  return jnp.where(flat_a & flat_b, both_flat, jnp.where(flat_a | flat_b, 0.0, r))


def _cosine(a: Array, b: Array) -> Array:
  """Per-row cosine (..., n) x (..., n) -> (...); two all-zero rows count as equal (1)."""
  na, nb = jnp.sum(a * a, axis=-1), jnp.sum(b * b, axis=-1)
  zero_a, zero_b = na <= 1e-20, nb <= 1e-20
  cos = jnp.sum(a * b, axis=-1) * jax.lax.rsqrt(jnp.where(zero_a | zero_b, 1.0, na * nb))
  return jnp.where(zero_a & zero_b, 1.0, jnp.where(zero_a | zero_b, 0.0, cos))


def align(a: Array, b: Array) -> tuple[Array, Array]:
  n = min(a.shape[-1], b.shape[-1])
  return a[..., :n], b[..., :n]


def contour(cqt: Array, soft: bool = False) -> Array:
  """The top-1 constant-Q bin of every frame (..., frames); `soft`: its differentiable expectation
  under a softmax of the log magnitudes."""
  if not soft:
    return jnp.argmax(cqt, axis=-1).astype(jnp.float32)
  logits = jnp.log(cqt + LOG_EPS) / SOFT_CONTOUR_TEMPERATURE
  return jnp.sum(jax.nn.softmax(logits, axis=-1) * jnp.arange(cqt.shape[-1], dtype=cqt.dtype), axis=-1)


def _pool(x: Array, size: int) -> Array:
  """Averages (..., frames, d) over consecutive blocks of `size` frames (the last block may be short)."""
  frames = x.shape[-2]
  blocks = -(-frames // size)
  pad = blocks * size - frames
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
  counts = jnp.pad(jnp.ones((frames,), x.dtype), (0, pad)).reshape(blocks, size).sum(-1)
  return padded.reshape(*x.shape[:-2], blocks, size, x.shape[-1]).sum(-2) / counts[:, None]


def self_similarity(chroma: Array, analysis: Analysis) -> Array:
  """Cosine self-similarity (..., blocks, blocks) of chroma pooled over form_pool_s seconds."""
  size = max(1, round(analysis.form_pool_s * analysis.sample_rate / analysis.hop_length))
  pooled = _pool(chroma, size)
  norm = jnp.sqrt(jnp.sum(pooled * pooled, axis=-1, keepdims=True))
  unit = pooled / jnp.where(norm > 1e-10, norm, 1.0)
  return unit @ jnp.swapaxes(unit, -1, -2)


def _upper(m: Array) -> Array:
  i, j = jnp.triu_indices(m.shape[-1], k=1)
  return m[..., i, j]


def _mrstft(a: Array, b: Array, soft: bool = False) -> Array:
  total = 0.0
  for n_fft, hop in STFT_RESOLUTIONS:
    sa, sb = features.magnitude(a, n_fft, hop), features.magnitude(b, n_fft, hop)
    scale = 0.5 * (jnp.sqrt(jnp.sum(sa * sa, axis=(-2, -1))) + jnp.sqrt(jnp.sum(sb * sb, axis=(-2, -1))))
    convergence = jnp.sqrt(jnp.sum((sa - sb) ** 2, axis=(-2, -1))) / jnp.maximum(scale, 1e-12)
    log_distance = jnp.mean(_abs(jnp.log(sa + LOG_EPS) - jnp.log(sb + LOG_EPS), soft), axis=(-2, -1))
    total = total + convergence + log_distance
  return total / len(STFT_RESOLUTIONS)


def _abs(x: Array, soft: bool) -> Array:
  return jnp.sqrt(x * x + SMOOTH_ABS ** 2) - SMOOTH_ABS if soft else jnp.abs(x)


def compare(a: Array, b: Array, analysis: Analysis = Analysis(), *, soft: bool = False) -> dict[str, Array]:
  """Every metric of METRICS between mono clips a and b (..., samples) -> {name: (...)}.

  soft: smooth stand-ins for gradients: the expected instead of the top-1 constant-Q bin, softmax
  pitches and sigmoid sounding weights in f0_chroma_accuracy and timbre_distance, a softmax
  dominant pitch class, chroma scaled by its 8-norm, soft floors and rectifiers in the onset
  envelope and the MFCCs, a soft |x| in the distances. Same names and ranges; the values differ
  slightly from the exact metrics, which are what gets reported."""
  a, b = align(a, b)
  sounding_a = features.sounding(features.level_db(a, analysis), smooth=soft)
  sounding_b = features.sounding(features.level_db(b, analysis), smooth=soft)
  cqt_a, cqt_b = features.constant_q(a, analysis), features.constant_q(b, analysis)
  chroma_a, chroma_b = features.chroma(a, analysis, smooth=soft), features.chroma(b, analysis, smooth=soft)
  if soft:
    pa = jax.nn.softmax(chroma_a / SOFT_MATCH_TEMPERATURE, -1)
    pb = jax.nn.softmax(chroma_b / SOFT_MATCH_TEMPERATURE, -1)
    match = jnp.mean(jnp.sum(pa * pb, -1) / jnp.sqrt(jnp.sum(pa * pa, -1) * jnp.sum(pb * pb, -1)), -1)
  else:
    match = jnp.mean((jnp.argmax(chroma_a, -1) == jnp.argmax(chroma_b, -1)).astype(a.dtype), -1)
  mel_a, mel_b = features.mel_power(a, analysis), features.mel_power(b, analysis)
  onset_a = features.onset_strength(a, analysis, smooth=soft)
  onset_b = features.onset_strength(b, analysis, smooth=soft)
  log_mel_gap = jnp.log(mel_a + LOG_EPS) - jnp.log(mel_b + LOG_EPS)
  return {
      "f0_chroma_accuracy": pitch.chroma_accuracy(pitch.salience(a, analysis), pitch.salience(b, analysis),
                                                  sounding_a, sounding_b, analysis, soft),
      "cqt1_pcc": pearson(contour(cqt_a, soft), contour(cqt_b, soft)),
      "chroma_cosine": jnp.mean(_cosine(chroma_a, chroma_b), axis=-1),
      "chroma_match": match,
      "form_ssm_correlation": pearson(_upper(self_similarity(chroma_a, analysis)),
                                      _upper(self_similarity(chroma_b, analysis))),
      "onset_correlation": pearson(onset_a, onset_b),
      "timbre_distance": timbre.timbre_distance(features.mfcc(mel_a, analysis, smooth=soft),
                                                features.mfcc(mel_b, analysis, smooth=soft), sounding_a, sounding_b),
      "logmel_distance": jnp.mean(_abs(log_mel_gap, soft), axis=(-2, -1)),
      "mrstft_distance": _mrstft(a, b, soft),
  }


@functools.partial(jax.jit, static_argnames=("analysis",))
def compare_jit(a: Array, b: Array, analysis: Analysis) -> dict[str, Array]:
  return compare(a, b, analysis)


def structure_similarity(values: dict[str, Array]) -> Array:
  """One number for how much musical structure is kept: the mean of the melody, form and rhythm
  similarities (f0_chroma_accuracy and chroma_cosine averaged as melody, then equal thirds).
  Melody is the harmonic-summation pitch, not cqt1_pcc, which on real instruments ranks another
  melody above the same melody on another instrument (docs/research.md)."""
  melody = 0.5 * (values["f0_chroma_accuracy"] + values["chroma_cosine"])
  return (melody + values["form_ssm_correlation"] + values["onset_correlation"]) / 3.0
