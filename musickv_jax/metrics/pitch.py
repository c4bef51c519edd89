"""The predominant pitch of every frame, by harmonic summation, and how often two clips agree on it.

The salience of a candidate fundamental f0 is the sum of the STFT magnitude at its first
HARMONICS partials h * f0, partial h weighted HARMONIC_DECAY^(h - 1) (the weighting of
Salamon & Gomez's melody salience; the code here is ours). The top candidate is the pitch. Summing
partials is what finds the fundamental when it is not the strongest partial (violin, flute, oboe):
the candidate an octave below collects only the even partials and the decayed weights, the one an
octave above misses the odd partials. The top-1 constant-Q bin (cqt1_pcc) looks at one partial
and jumps to whichever is loudest.

Pitches are compared as pitch classes at 10-cent resolution: two frames agree if their pitches
are within AGREEMENT_CENTS of each other after folding octaves (MIREX's "raw chroma accuracy",
with the half-semitone tolerance of its melody evaluations), so an octave error on one
instrument does not count as a different melody.

Shapes: salience (..., frames, candidates), candidates = pitch_octaves * pitch_bins_per_octave.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.metrics import features, filterbanks
from musickv_jax.metrics.features import Analysis

Array = jax.Array
HARMONICS = 10  # partials summed; the 10th of C4 is at 2.6 kHz
HARMONIC_DECAY = 0.8  # weight of partial h: 0.8^(h - 1)
AGREEMENT_CENTS = 50.0  # two pitch classes agree within a quarter tone either way
SOFT_PITCH_TEMPERATURE = 0.05  # log-salience units: a candidate 5% less salient than the top gets 1/e its weight
LOG_EPS = 1e-5  # floor inside the log of the salience (a magnitude sum)
MIN_FRAMES = 0.5  # fewer co-sounding frames than this (in weight) count as none


def candidates_hz(analysis: Analysis) -> np.ndarray:
  """The candidate fundamentals (candidates,) in Hz, pitch_bins_per_octave to the octave."""
  count = analysis.pitch_octaves * analysis.pitch_bins_per_octave
  return analysis.pitch_fmin * 2.0 ** (np.arange(count) / analysis.pitch_bins_per_octave)


def salience(signal: Array, analysis: Analysis) -> Array:
  """Harmonic-summation salience (..., frames, candidates) of mono audio (..., samples)."""
  bank = filterbanks.harmonic_filterbank(analysis.sample_rate, analysis.pitch_n_fft, analysis.pitch_fmin,
                                         analysis.pitch_octaves * analysis.pitch_bins_per_octave,
                                         analysis.pitch_bins_per_octave, HARMONICS, HARMONIC_DECAY)
  magnitude = features.magnitude(signal, analysis.pitch_n_fft, analysis.hop_length)
  return magnitude @ jnp.asarray(bank.T, signal.dtype)


def f0_hz(pitch_salience: Array, analysis: Analysis) -> Array:
  """The predominant pitch (..., frames) in Hz: the most salient candidate. Meaningful on sounding
  frames only (features.sounding)."""
  return jnp.asarray(candidates_hz(analysis), jnp.float32)[jnp.argmax(pitch_salience, axis=-1)]


def pitch_class_weights(pitch_salience: Array, analysis: Analysis, soft: bool = False) -> Array:
  """(..., frames, pitch_bins_per_octave): where each frame's pitch lies on the pitch-class circle,
  octaves folded. Exact: one-hot at the most salient candidate. soft: a softmax of the log
  salience at SOFT_PITCH_TEMPERATURE (differentiable; candidates an octave apart add up)."""
  if soft:
    weights = jax.nn.softmax(jnp.log(pitch_salience + LOG_EPS) / SOFT_PITCH_TEMPERATURE, axis=-1)
  else:
    weights = jax.nn.one_hot(jnp.argmax(pitch_salience, axis=-1), pitch_salience.shape[-1], dtype=pitch_salience.dtype)
  octaves = weights.reshape(*weights.shape[:-1], analysis.pitch_octaves, analysis.pitch_bins_per_octave)
  return jnp.sum(octaves, axis=-2)


@functools.lru_cache(maxsize=8)
def agreement_kernel(bins_per_octave: int) -> np.ndarray:
  """(bins, bins): 1 where two pitch classes are within AGREEMENT_CENTS on the circle, else 0."""
  bins = np.arange(bins_per_octave)
  steps = np.abs(bins[:, None] - bins[None, :])
  cents = np.minimum(steps, bins_per_octave - steps) * (1200.0 / bins_per_octave)
  return (cents <= AGREEMENT_CENTS + 1e-9).astype(np.float64)


def chroma_accuracy(salience_a: Array, salience_b: Array, sounding_a: Array, sounding_b: Array,
                    analysis: Analysis, soft: bool = False) -> Array:
  """The fraction of the frames sounding in both clips (weights (..., frames)) whose pitches agree
  within AGREEMENT_CENTS, octaves folded -> (...). Two clips without a sounding frame agree (1);
  one that sounds against one that does not, or two that never sound together, do not (0).
  soft: softmax pitches (the expected agreement) and soft sounding weights, for gradients."""
  kernel = jnp.asarray(agreement_kernel(analysis.pitch_bins_per_octave), salience_a.dtype)
  pa = pitch_class_weights(salience_a, analysis, soft)
  pb = pitch_class_weights(salience_b, analysis, soft)
  agree = jnp.sum((pa @ kernel) * pb, axis=-1)  # (..., frames)
  both = sounding_a * sounding_b
  together = jnp.sum(both, axis=-1)
  accuracy = jnp.sum(both * agree, axis=-1) / jnp.maximum(together, MIN_FRAMES)
  neither = (jnp.sum(sounding_a, axis=-1) < MIN_FRAMES) & (jnp.sum(sounding_b, axis=-1) < MIN_FRAMES)
  return jnp.where(together >= MIN_FRAMES, accuracy, jnp.where(neither, 1.0, 0.0))
