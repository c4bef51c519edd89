"""A spectrogram comparison PNG (source vs edits): what people look at to judge an edit.

The frequency axis is mel (log-like above 1 kHz), as music tools show it, so melody and harmony
fill the picture instead of the bottom strip of a linear axis. Long clips are averaged down in
time to at most MAX_COLUMNS columns, so a whole song stays readable and the file stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np

from musickv_jax.metrics import filterbanks

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

MAX_COLUMNS = 2000
N_MELS = 128
_TICKS_HZ = (250, 500, 1000, 2000, 4000, 8000, 16000)


def mel_spectrogram_db(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float, int]:
  """(channels, samples) audio -> (n_mels, frames) mel power in dB of the mono mix, Hann STFT.
  Returns (dB, duration in s, n_fft)."""
  mono = np.asarray(audio, np.float64).mean(axis=0)
  n_fft = int(min(2048, max(16, 2 ** int(np.log2(max(len(mono) // 8, 16))))))
  hop = max(1, n_fft // 4)
  if len(mono) < n_fft:
    mono = np.pad(mono, (0, n_fft - len(mono)))
  frames = 1 + (len(mono) - n_fft) // hop
  window = filterbanks.hann(n_fft)
  power = np.empty((frames, 1 + n_fft // 2))
  for start in range(0, frames, 4096):  # in blocks: a 5-minute song does not need all frames at once
    index = np.arange(n_fft)[None, :] + hop * np.arange(start, min(frames, start + 4096))[:, None]
    power[start:start + len(index)] = np.abs(np.fft.rfft(mono[index] * window, axis=1)) ** 2
  n_mels = min(N_MELS, max(8, n_fft // 8))
  mel = filterbanks.mel_filterbank(sample_rate, n_fft, n_mels) @ power.T
  return 10 * np.log10(mel + 1e-10), len(mono) / sample_rate, n_fft


def _downsample(db: np.ndarray, columns: int) -> np.ndarray:
  if db.shape[1] <= columns:
    return db
  edges = np.linspace(0, db.shape[1], columns + 1).astype(int)
  return np.stack([db[:, a:b].max(axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)


def save_comparison(path: str | Path, audios: Sequence[np.ndarray], labels: Sequence[str], sample_rate: int) -> None:
  """One row per audio, shared colour scale (the loudest 80 dB), written to `path` as PNG."""
  specs = [mel_spectrogram_db(a, sample_rate) for a in audios]
  top = max(float(s[0].max()) for s in specs)
  fig, axes = plt.subplots(len(specs), 1, figsize=(10, 2.4 * len(specs)), squeeze=False, sharex=True)
  for ax, (db, duration, n_fft), label in zip(axes[:, 0], specs, labels):
    n_mels = db.shape[0]
    image = ax.imshow(_downsample(db, MAX_COLUMNS), origin="lower", aspect="auto", extent=(0, duration, 0, n_mels),
                      vmin=top - 80, vmax=top, cmap="magma", interpolation="nearest")
    edges = filterbanks.mel_to_hz(np.linspace(filterbanks.hz_to_mel(0), filterbanks.hz_to_mel(sample_rate / 2),
                                              n_mels + 2))[1:-1]
    ticks = [hz for hz in _TICKS_HZ if edges[0] <= hz <= edges[-1]]
    ax.set_yticks(np.interp(ticks, edges, np.arange(n_mels)), [f"{hz / 1000:g}k" if hz >= 1000 else str(hz)
                                                                for hz in ticks])
    ax.set_title(label, fontsize=9, loc="left")
    ax.set_ylabel("Hz (mel scale)")
  axes[-1, 0].set_xlabel("seconds")
  fig.colorbar(image, ax=axes[:, 0].tolist(), label="dB", shrink=0.8)
  fig.savefig(path, dpi=100, format="png")
  plt.close(fig)
