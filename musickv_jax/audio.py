"""Audio files: writing (atomically) and, for real-audio editing, reading and resampling.

Audio arrays are (channels, samples) float32 in [-1, 1] nominal.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

WAV_SUBTYPES = ("FLOAT", "PCM_16", "PCM_24")


class AudioError(ValueError):
  """Audio input or output that cannot be used; the message says why and what to do."""


def write_atomic(path: str | Path, write) -> Path:
  """Calls write(tmp_path) for a temporary file beside `path`, then renames it into place, so a
  failure never leaves a half-written file under the final name."""
  path = Path(path)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
  os.close(fd)
  try:
    write(Path(tmp))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path


def save_wav(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "FLOAT") -> Path:
  """Writes (channels, samples) audio as a WAV file, atomically."""
  audio = np.asarray(audio, np.float32)
  if audio.ndim != 2:
    raise AudioError(f"expected (channels, samples) audio, got shape {audio.shape}")
  if subtype not in WAV_SUBTYPES:
    raise AudioError(f"unknown WAV subtype {subtype!r}; use one of {WAV_SUBTYPES}")
  if subtype != "FLOAT":
    audio = np.clip(audio, -1.0, 1.0)
  return write_atomic(path, lambda tmp: sf.write(str(tmp), audio.T, sample_rate, subtype=subtype, format="WAV"))
