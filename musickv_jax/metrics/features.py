"""Time-frequency features of audio, in JAX (differentiable, jit-able, batched over leading axes).

Audio is mono (..., samples); stereo is mixed down by the caller (`mono`). Features are
time-major, (..., frames, bins). Frames follow librosa's centred analysis: the signal is
zero-padded by n_fft // 2 on both sides and framed every hop samples, so a clip of n samples
gives 1 + n // hop frames, frame t centred on sample t * hop.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from musickv_jax.errors import SettingsError
from musickv_jax.metrics import filterbanks

Array = jax.Array
MIN_SAMPLE_RATE = 16000  # the highest constant-Q and pitch bins (C8, 4.2 kHz) lie below its Nyquist frequency
AMIN = 1e-10  # power floor of the dB scale
TOP_DB = 80.0


@dataclasses.dataclass(frozen=True)
class Analysis:
  """The analysis settings every feature uses (hashable: a static argument of jitted functions).

  The mel / chroma / onset / MFCC settings are librosa's defaults at this sample rate, so those
  features agree with librosa's. The constant-Q analysis is ours: semitone bins from `cqt_fmin`
  (C2, 65.4 Hz) over `cqt_bins` semitones (6 octaves), from an STFT long enough (`cqt_n_fft`) to
  separate semitones at C2. The pitch salience (musickv_jax.metrics.pitch) has candidate
  fundamentals from `pitch_fmin` (C2) over `pitch_octaves` octaves (to C7, 2093 Hz),
  `pitch_bins_per_octave` to the octave (10 cents), read from a `pitch_n_fft` STFT: it resolves
  partials 55 Hz apart (5 bins at 44.1 kHz) while smearing note changes over half as long as
  the constant-Q window. Form is compared on chroma pooled over `form_pool_s` seconds."""

  sample_rate: int = 44100
  n_fft: int = 2048
  hop_length: int = 512
  n_mels: int = 128
  n_mfcc: int = 13
  cqt_n_fft: int = 8192
  cqt_fmin: float = 65.406
  cqt_bins: int = 72
  pitch_n_fft: int = 4096
  pitch_fmin: float = 65.406
  pitch_octaves: int = 5
  pitch_bins_per_octave: int = 120
  form_pool_s: float = 1.0

  def frames(self, n_samples: int) -> int:
    return 1 + n_samples // self.hop_length

  def check_rate(self) -> None:
    """Raises SettingsError when the audio's rate is too low for these features (the constant-Q
    and pitch analyses reach C8, 4.2 kHz)."""
    if self.sample_rate < MIN_SAMPLE_RATE:
      raise SettingsError(f"the music metrics need audio at {MIN_SAMPLE_RATE} Hz or more (their pitch analysis "
                          f"reaches 4.2 kHz); this audio is at {self.sample_rate} Hz", field=None)


def mono(audio: Array) -> Array:
  """(..., channels, samples) -> (..., samples), the mean of the channels."""
  return jnp.mean(audio, axis=-2)


def frame(signal: Array, n_fft: int, hop: int) -> Array:
  """Centred, zero-padded frames: (..., samples) -> (..., 1 + samples // hop, n_fft)."""
  padded = jnp.pad(signal, [(0, 0)] * (signal.ndim - 1) + [(n_fft // 2, n_fft // 2)])
  count = 1 + signal.shape[-1] // hop
  index = np.arange(count)[:, None] * hop + np.arange(n_fft)[None, :]
  return padded[..., index]


def magnitude(signal: Array, n_fft: int, hop: int) -> Array:
  """|STFT| with a periodic Hann window: (..., frames, 1 + n_fft // 2)."""
  window = jnp.asarray(filterbanks.hann(n_fft), signal.dtype)
  spectrum = jnp.fft.rfft(frame(signal, n_fft, hop) * window, axis=-1)
  return jnp.abs(spectrum)


def power(signal: Array, n_fft: int, hop: int) -> Array:
  window = jnp.asarray(filterbanks.hann(n_fft), signal.dtype)
  spectrum = jnp.fft.rfft(frame(signal, n_fft, hop) * window, axis=-1)
  return jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2  # |X|^2 without a square root (smooth at 0)


def mel_power(signal: Array, analysis: Analysis) -> Array:
  """Mel power spectrogram (..., frames, n_mels): librosa.feature.melspectrogram's quantity."""
  bank = jnp.asarray(filterbanks.mel_filterbank(analysis.sample_rate, analysis.n_fft, analysis.n_mels), signal.dtype)
  return power(signal, analysis.n_fft, analysis.hop_length) @ bank.T


SMOOTH_DB = 1.0  # dB: the width of the soft floors and rectifiers of the `smooth` variants
SOUNDING_DB = 30.0  # a frame sounds if it is within this of the clip's loudest frame ...
SILENCE_DBFS = -90.0  # ... and above this (below the dither noise of 16-bit audio, about -98 dBFS)


def _soft_relu(x: Array, width: float) -> Array:
  return width * jax.nn.softplus(x / width)


def power_to_db(values: Array, top_db: float = TOP_DB, smooth: bool = False) -> Array:
  """10 log10(max(values, 1e-10)), floored at top_db below each clip's maximum. smooth: the floors
  are softplus curves SMOOTH_DB wide (for gradients; within about a dB of the exact one)."""
  if not smooth:
    db = 10.0 * jnp.log10(jnp.maximum(values, AMIN))
    peak = jnp.max(db, axis=(-2, -1), keepdims=True)
    return jnp.maximum(db, peak - top_db)
  db = 10.0 * jnp.log10(values + AMIN)
  floor = jnp.max(db, axis=(-2, -1), keepdims=True) - top_db
  return floor + _soft_relu(db - floor, SMOOTH_DB)


def onset_strength(signal: Array, analysis: Analysis, smooth: bool = False) -> Array:
  """Spectral-flux onset envelope (..., frames): the mean over mel bands of the rise in dB from the
  previous frame (rises only), delayed to line up with the frames, like librosa.onset.onset_strength.
  smooth: soft floors and a softplus rectifier (for gradients)."""
  db = power_to_db(mel_power(signal, analysis), smooth=smooth)
  rise = db[..., 1:, :] - db[..., :-1, :]
  flux = jnp.mean(_soft_relu(rise, SMOOTH_DB) if smooth else jnp.maximum(rise, 0.0), axis=-1)
  delay = 1 + analysis.n_fft // (2 * analysis.hop_length)
  envelope = jnp.pad(flux, [(0, 0)] * (flux.ndim - 1) + [(delay, 0)])
  return envelope[..., :db.shape[-2]]


def chroma(signal: Array, analysis: Analysis, smooth: bool = False) -> Array:
  """Chroma (..., frames, 12), C first, each frame scaled to a maximum of 1 (silent frames stay 0):
  librosa.feature.chroma_stft's quantity at tuning 0. smooth: scaled by the 8-norm instead of the
  maximum (a smooth stand-in, within a factor 12^(1/8) = 1.36 of it)."""
  bank = jnp.asarray(filterbanks.chroma_filterbank(analysis.sample_rate, analysis.n_fft), signal.dtype)
  raw = power(signal, analysis.n_fft, analysis.hop_length) @ bank.T
  if smooth:
    # the 8-norm, computed as m * ||raw / m||_8 with m the (constant) frame maximum against under- and overflow
    m = jax.lax.stop_gradient(jnp.maximum(jnp.max(raw, axis=-1, keepdims=True), jnp.finfo(raw.dtype).tiny))
    norm = m * jnp.sum((raw / m) ** 8, axis=-1, keepdims=True) ** 0.125
    return raw / jnp.where(norm > jnp.finfo(raw.dtype).tiny, norm, 1.0)
  peak = jnp.max(raw, axis=-1, keepdims=True)
  return raw / jnp.where(peak > jnp.finfo(raw.dtype).tiny, peak, 1.0)


def constant_q(signal: Array, analysis: Analysis) -> Array:
  """Constant-Q magnitude (..., frames, cqt_bins): semitone bins from cqt_fmin, on the hop grid of
  the other features."""
  bank = jnp.asarray(filterbanks.semitone_filterbank(analysis.sample_rate, analysis.cqt_n_fft, analysis.cqt_fmin,
                                                     analysis.cqt_bins), signal.dtype)
  return magnitude(signal, analysis.cqt_n_fft, analysis.hop_length) @ bank.T


def mfcc(mel: Array, analysis: Analysis, smooth: bool = False) -> Array:
  """MFCCs (..., frames, n_mfcc) of a mel power spectrogram (mel_power's output): the orthonormal
  DCT-II of its dB values floored 80 dB below the clip's peak, librosa.feature.mfcc's quantity.
  Coefficient 0 is the frame's overall level; the others describe the spectral envelope's shape.
  smooth: soft dB floors (for gradients)."""
  basis = jnp.asarray(filterbanks.dct_matrix(analysis.n_mfcc, mel.shape[-1]), mel.dtype)
  return power_to_db(mel, smooth=smooth) @ basis.T


def level_db(signal: Array, analysis: Analysis) -> Array:
  """Loudness of each frame (..., frames) in dB re full scale: the Hann-weighted mean square of the
  n_fft-sample frame (a full-scale sine is -3 dB), floored at -100 dB."""
  window = jnp.asarray(filterbanks.hann(analysis.n_fft), signal.dtype)
  weighted = frame(signal, analysis.n_fft, analysis.hop_length) * window
  mean_square = jnp.sum(weighted * weighted, axis=-1) / jnp.sum(window * window)
  return 10.0 * jnp.log10(mean_square + AMIN)


def sounding(level: Array, smooth: bool = False) -> Array:
  """Which frames sound (..., frames) -> weights in [0, 1]: 1 within SOUNDING_DB of the clip's
  loudest frame and above SILENCE_DBFS, else 0. Left out are silence, rests and the deep tails of
  decays, where pitch and spectrum belong to the reverb and the noise more than to the
  instrument. smooth: sigmoids SMOOTH_DB wide instead of steps (for gradients)."""
  above_floor = level - (jnp.max(level, axis=-1, keepdims=True) - SOUNDING_DB)
  above_silence = level - SILENCE_DBFS
  if smooth:
    return jax.nn.sigmoid(above_floor / SMOOTH_DB) * jax.nn.sigmoid(above_silence / SMOOTH_DB)
  return ((above_floor >= 0) & (above_silence >= 0)).astype(level.dtype)
