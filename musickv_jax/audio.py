"""Audio files: writing (atomically) and, for real-audio editing, reading and resampling.

Audio arrays are (channels, samples) float32 in [-1, 1] nominal.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly

from musickv_jax.errors import AudioError
from musickv_jax.files import final_name, not_a_file, write_atomic
from musickv_jax.finite import require_finite

WAV_SUBTYPES = ("FLOAT", "PCM_16", "PCM_24")


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> Path:
  """Writes (channels, samples) audio as a WAV file, atomically. Refuses NaN or infinite samples
  (NonFiniteError): the stages that made them say which they are (musickv_jax.finite)."""
  audio = np.asarray(audio, np.float32)
  require_finite(audio, stage="the run", what=f"samples in {final_name(path)}")
  if audio.ndim != 2:
    raise AudioError(f"expected (channels, samples) audio, got shape {audio.shape}")
  if subtype not in WAV_SUBTYPES:
    raise AudioError(f"unknown WAV subtype {subtype!r}; use one of {WAV_SUBTYPES}")
  if subtype != "FLOAT":
    audio = np.clip(audio, -1.0, 1.0)
  return write_atomic(path, lambda tmp: sf.write(str(tmp), audio.T, sample_rate, subtype=subtype, format="WAV"))


# ----------------------------------------------------------------------------- reading

SILENCE_PEAK = 10 ** (-80 / 20)  # below -80 dBFS there is nothing to edit
CLIP_LEVEL = 0.999
CLIP_FRACTION_WARN = 1e-3


@dataclasses.dataclass
class LoadedAudio:
  """An input recording, ready for the VAE: (2, samples) float32 at the model's sample rate."""

  audio: np.ndarray
  sample_rate: int
  source_rate: int
  source_channels: int
  start_s: float
  warnings: list[str]

  @property
  def duration_s(self) -> float:
    return self.audio.shape[-1] / self.sample_rate


RESAMPLE_ZERO_CROSSINGS = 32  # per side of the low-pass: longer = sharper and more accurate
RESAMPLE_KAISER_BETA = 10.0
_MAX_FILTER_TAPS = 1 << 22


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
  """Band-limited polyphase resampling along the last axis: scipy's resample_poly with our own
  low-pass, a Kaiser (beta 10) windowed sinc with 32 zero crossings per side at the lower of
  the two Nyquist frequencies. A 1 kHz sine, 48 kHz -> 44.1 kHz, comes out within 1.3e-6 of the
  exact sine (amplitude 0.5); see tests/test_audio.py."""
  if source_rate == target_rate:
    return np.asarray(audio, np.float32)

  g = math.gcd(int(source_rate), int(target_rate))
  up, down = int(target_rate) // g, int(source_rate) // g
  crossings = max(4, min(RESAMPLE_ZERO_CROSSINGS, _MAX_FILTER_TAPS // (2 * max(up, down))))
  taps = firwin(2 * crossings * max(up, down) + 1, 1.0 / max(up, down),
                window=("kaiser", RESAMPLE_KAISER_BETA))
  return resample_poly(np.asarray(audio, np.float64), up, down, axis=-1, window=taps).astype(np.float32)


def load_audio(path: str | Path, *, sample_rate: int, max_seconds: float, start_s: float = 0.0,
               end_s: float | None = None, downmix: bool = False, channels: int = 2) -> LoadedAudio:
  """Reads WAV / FLAC / MP3 / OGG, cuts [start_s, end_s], makes it stereo and resamples it.

  Mono is duplicated to stereo; more channels need downmix=True (their mean, duplicated).
  Errors say what is wrong and what to do: missing or unreadable file, no samples, NaN or
  infinite samples, silence, a segment outside the file, or a clip longer than the model takes.
  Clipping is reported as a warning."""
  path = Path(path).expanduser()
  problem = not_a_file(path, kind="audio file")
  if problem:
    raise AudioError(problem)
  try:
    info = sf.info(str(path))
  except (sf.LibsndfileError, RuntimeError, TypeError) as e:
    raise AudioError(f"{path}: cannot read it as audio ({_first_line(e)}); use WAV, FLAC, MP3 or OGG") from None
  rate = int(info.samplerate)
  total_s = info.frames / rate if rate else 0.0
  if info.frames <= 0:
    raise AudioError(f"{path}: the file contains no audio samples")
  end_s = total_s if end_s is None else float(end_s)
  if start_s < 0 or start_s >= total_s:
    raise AudioError(f"{path}: {{field}} {start_s:g} is outside the file (0 to {total_s:.2f} s)", field="start_s")
  if end_s <= start_s:
    raise AudioError(f"{path}: {{field}} ({end_s:g}) must be greater than {{start_s}} ({start_s:g})", field="end_s",
                     mentions=("start_s",))
  end_s = min(end_s, total_s)
  if end_s - start_s > max_seconds + 1e-6:
    raise AudioError(f"{path}: the audio is {end_s - start_s:.2f} s long but the model takes at most "
                     f"{max_seconds:.2f} s; pick a segment with {{start_s}} / {{end_s}}", field="end_s",
                     mentions=("start_s", "end_s"))
  try:
    data, _ = sf.read(str(path), start=int(round(start_s * rate)), stop=int(round(end_s * rate)),
                      dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError) as e:
    raise AudioError(f"{path}: cannot decode the audio ({_first_line(e)})") from None
  if data.shape[0] == 0:
    raise AudioError(f"{path}: the selected segment contains no audio samples")
  if not np.all(np.isfinite(data)):
    raise AudioError(f"{path}: the audio contains NaN or infinite samples; re-export the file")
  data = data.T  # (channels, samples)
  source_channels = data.shape[0]
  if source_channels > channels:
    if not downmix:
      raise AudioError(f"{path}: the audio has {source_channels} channels; the model takes {channels}. "
                       "Set {field} to mix them down", field="downmix")
    data = np.repeat(data.mean(axis=0, keepdims=True), channels, axis=0)
  elif source_channels < channels:
    data = np.repeat(data[:1], channels, axis=0)
  peak = float(np.max(np.abs(data)))
  if peak < SILENCE_PEAK:
    level = "-inf" if peak == 0 else f"{20 * np.log10(peak):.0f}"
    raise AudioError(f"{path}: the audio is silent (peak {level} dBFS); there is nothing to edit")
  warnings = []
  clipped = float(np.mean(np.abs(data) >= CLIP_LEVEL))
  if clipped > CLIP_FRACTION_WARN:
    warnings.append(f"{path}: {100 * clipped:.2f}% of the samples are clipped (at full scale); "
                    "the edit will keep the distortion")
  data = resample(data, rate, sample_rate)
  return LoadedAudio(audio=np.ascontiguousarray(data, np.float32), sample_rate=sample_rate, source_rate=rate,
                     source_channels=source_channels, start_s=start_s, warnings=warnings)


def pad_to_hop(audio: np.ndarray, hop: int) -> np.ndarray:
  """Zero-pads (channels, samples) at the end to a whole number of VAE hops."""
  remainder = audio.shape[-1] % hop
  if remainder == 0:
    return audio
  return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, hop - remainder)])


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__
