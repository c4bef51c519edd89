"""Fixed analysis matrices, built once in NumPy (float64) and used as constants in JAX.

  mel_filterbank       (n_mels, 1 + n_fft // 2)   Slaney mel scale and area normalisation
                                                  (what librosa.filters.mel gives by default)
  chroma_filterbank    (12, 1 + n_fft // 2)       Gaussian bumps on the pitch-class circle, weighted
                                                  toward the middle octaves (librosa.filters.chroma's
                                                  construction, base C, A440 tuning)
  semitone_filterbank  (n_bins, 1 + n_fft // 2)   a constant-Q spectrum from an STFT: one triangular
                                                  filter per semitone on a log-frequency axis
"""

from __future__ import annotations

import functools

import numpy as np

_MEL_F_SP = 200.0 / 3  # Slaney: linear below 1 kHz, 3 mel per 200 Hz
_MEL_MIN_LOG_HZ = 1000.0
_MEL_LOGSTEP = np.log(6.4) / 27.0  # log-spaced above 1 kHz


def hann(n: int) -> np.ndarray:
  """The periodic Hann window (for spectral analysis), length n."""
  return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def fft_frequencies(sample_rate: float, n_fft: int) -> np.ndarray:
  return np.linspace(0, sample_rate / 2, 1 + n_fft // 2)


def hz_to_mel(hz):
  hz = np.asarray(hz, np.float64)
  linear = hz / _MEL_F_SP
  log = _MEL_MIN_LOG_HZ / _MEL_F_SP + np.log(np.maximum(hz, 1e-10) / _MEL_MIN_LOG_HZ) / _MEL_LOGSTEP
  return np.where(hz >= _MEL_MIN_LOG_HZ, log, linear)


def mel_to_hz(mel):
  mel = np.asarray(mel, np.float64)
  min_log_mel = _MEL_MIN_LOG_HZ / _MEL_F_SP
  return np.where(mel >= min_log_mel, _MEL_MIN_LOG_HZ * np.exp(_MEL_LOGSTEP * (mel - min_log_mel)), _MEL_F_SP * mel)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """Triangles between n_mels + 2 points equally spaced on the Slaney mel scale, each scaled by
  2 / (its width in Hz) so that every filter has the same area."""
  fmax = sample_rate / 2 if fmax is None else fmax
  edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  freqs = fft_frequencies(sample_rate, n_fft)
  rising = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
  falling = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))
  return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@functools.lru_cache(maxsize=16)
def chroma_filterbank(sample_rate: float, n_fft: int, n_chroma: int = 12, center_octave: float = 5.0,
                      octave_width: float = 2.0) -> np.ndarray:
  """Each FFT bin spreads onto the pitch-class circle as a Gaussian bump (half a chroma bin wide,
  or the bin's own width in chroma bins where that is wider), columns normalised to unit L2 norm,
  weighted by a Gaussian over octaves centred on octave `center_octave` (of A440 / 16 = 27.5 Hz),
  rows starting at C. The DC bin is placed 1.5 octaves below the first bin."""
  freqs = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
  octs = np.log2(freqs / (440.0 / 16))  # octaves above A0
  bins = n_chroma * octs
  bins = np.concatenate([[bins[0] - 1.5 * n_chroma], bins])
  widths = np.concatenate([np.maximum(np.diff(bins), 1.0), [1.0]])
  half = np.round(n_chroma / 2)
  distance = np.remainder(bins[None, :] - np.arange(n_chroma)[:, None] + half + 10 * n_chroma, n_chroma) - half
  weights = np.exp(-0.5 * (2 * distance / widths[None, :]) ** 2)
  weights /= np.linalg.norm(weights, axis=0, keepdims=True)
  weights *= np.exp(-0.5 * ((bins / n_chroma - center_octave) / octave_width) ** 2)[None, :]
  weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)  # rows from A to rows from C
  return weights[:, :1 + n_fft // 2]


@functools.lru_cache(maxsize=16)
def semitone_filterbank(sample_rate: float, n_fft: int, fmin: float, n_bins: int) -> np.ndarray:
  """A constant-Q analysis from an STFT: bin k is centred on fmin * 2^(k / 12) and is a triangle on
  the log-frequency axis reaching zero at the neighbouring semitones, so adjacent bins overlap
  by half and every bin has the same width in cents (constant Q). Each row sums to one; where a
  triangle is narrower than the FFT's bin spacing, the nearest FFT bin gets its weight."""
  freqs = fft_frequencies(sample_rate, n_fft)
  log_freqs = np.log2(np.maximum(freqs, 1e-10) / fmin) * 12  # in semitones above fmin
  centers = np.arange(n_bins)
  weights = np.maximum(0.0, 1.0 - np.abs(log_freqs[None, :] - centers[:, None]))
  center_hz = fmin * 2.0 ** (centers / 12)
  if np.any(center_hz >= sample_rate / 2):
    raise ValueError(f"the top constant-Q bin ({center_hz[-1]:.0f} Hz) is above the Nyquist frequency "
                     f"({sample_rate / 2:.0f} Hz); use fewer bins or a higher sample rate")
  for k in np.flatnonzero(weights.sum(axis=1) == 0):
    weights[k, np.argmin(np.abs(freqs - center_hz[k]))] = 1.0
  return weights / weights.sum(axis=1, keepdims=True)
