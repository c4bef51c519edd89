"""Fixed analysis matrices, built once in NumPy (float64) and used as constants in JAX.

  mel_filterbank       (n_mels, 1 + n_fft // 2)   Slaney mel scale and area normalisation
                                                  (what librosa.filters.mel gives by default)
  chroma_filterbank    (12, 1 + n_fft // 2)       Gaussian bumps on the pitch-class circle, weighted
                                                  toward the middle octaves (librosa.filters.chroma's
                                                  construction, base C, A440 tuning)
  semitone_filterbank  (n_bins, 1 + n_fft // 2)   a constant-Q spectrum from an STFT: one triangular
                                                  filter per semitone on a log-frequency axis
  harmonic_filterbank  (n_bins, 1 + n_fft // 2)   harmonic-summation pitch salience: each row reads
                                                  the first partials of one candidate fundamental
  dct_matrix           (n_out, n_in)              the orthonormal DCT-II (mel spectrum to MFCC, what
                                                  scipy.fft.dct(type=2, norm="ortho") computes)
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


@functools.lru_cache(maxsize=16)
def harmonic_filterbank(sample_rate: float, n_fft: int, fmin: float, n_bins: int, bins_per_octave: int,
                        n_harmonics: int, decay: float) -> np.ndarray:
  """Row k sums the magnitude spectrum at the partials h * f0_k (h = 1 .. n_harmonics) of the
  candidate fundamental f0_k = fmin * 2^(k / bins_per_octave), partial h weighted decay^(h - 1).
  Each partial is read through a triangle of unit height centred on it that reaches zero at the
  same partial of the neighbouring candidates (so they overlap by half and no partial falls
  between candidates), or one FFT bin away where that is wider (then it is linear interpolation
  between the two nearest bins). Partials at or above the Nyquist frequency are left out."""
  freqs = fft_frequencies(sample_rate, n_fft)
  f0 = fmin * 2.0 ** (np.arange(n_bins) / bins_per_octave)
  if f0[-1] >= sample_rate / 2:
    raise ValueError(f"the top pitch candidate ({f0[-1]:.0f} Hz) is above the Nyquist frequency "
                     f"({sample_rate / 2:.0f} Hz); use fewer octaves or a higher sample rate")
  step = 2.0 ** (1.0 / bins_per_octave) - 1.0  # the candidates' relative spacing
  weights = np.zeros((n_bins, freqs.size))
  for h in range(1, n_harmonics + 1):
    centre = h * f0
    half_width = np.maximum(sample_rate / n_fft, centre * step)
    bump = np.maximum(0.0, 1.0 - np.abs(freqs[None, :] - centre[:, None]) / half_width[:, None])
    weights += decay ** (h - 1) * np.where((centre < sample_rate / 2)[:, None], bump, 0.0)
  return weights


@functools.lru_cache(maxsize=16)
def dct_matrix(n_out: int, n_in: int) -> np.ndarray:
  """The first n_out rows of the orthonormal DCT-II of length n_in: y = x @ dct_matrix(...).T."""
  k, n = np.arange(n_out)[:, None], np.arange(n_in)[None, :]
  basis = np.sqrt(2.0 / n_in) * np.cos(np.pi * k * (2 * n + 1) / (2 * n_in))
  basis[0] /= np.sqrt(2.0)
  return basis
