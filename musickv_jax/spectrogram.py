"""A spectrogram comparison PNG (source vs edits): what people look at to judge an edit."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def log_spectrogram(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float, float]:
  """(channels, samples) audio -> (freq bins, frames) magnitude in dB of the mono mix, Hann STFT.
  Returns (dB, duration in s, max frequency in Hz)."""
  mono = np.asarray(audio, np.float64).mean(axis=0)
  n_fft = int(min(2048, max(16, 2 ** int(np.log2(max(len(mono) // 8, 16))))))
  hop = max(1, n_fft // 4)
  if len(mono) < n_fft:
    mono = np.pad(mono, (0, n_fft - len(mono)))
  frames = 1 + (len(mono) - n_fft) // hop
  index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
  spectrum = np.abs(np.fft.rfft(mono[index] * np.hanning(n_fft)[None, :], axis=1)).T
  db = 20 * np.log10(spectrum + 1e-8)
  return db, len(mono) / sample_rate, sample_rate / 2


def save_comparison(path: str | Path, audios: Sequence[np.ndarray], labels: Sequence[str], sample_rate: int) -> None:
  """One row per audio, shared colour scale (the loudest 80 dB), written to `path` as PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  specs = [log_spectrogram(a, sample_rate) for a in audios]
  top = max(float(s[0].max()) for s in specs)
  fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.4 * len(specs)), squeeze=False, sharex=True)
  for ax, (db, duration, nyquist), label in zip(axes[:, 0], specs, labels):
    image = ax.imshow(db, origin="lower", aspect="auto", extent=(0, duration, 0, nyquist / 1000),
                      vmin=top - 80, vmax=top, cmap="magma")
    ax.set_title(label, fontsize=9, loc="left")
    ax.set_ylabel("kHz")
  axes[-1, 0].set_xlabel("seconds")
  fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)
