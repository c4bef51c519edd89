"""The inversions of recordings, kept for the next edit of the same recording: keyed by the audio's
content (as the model hears it: segment, channels, sample rate), the source prompt, the model,
every inversion setting (steps included), the windows and the layers whose K/V were recorded.
Bounded: the least recently used goes first. Thread-safe (a server's requests share one)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import threading

import numpy as np

from musickv_jax.pipeline import Inversion, InversionSettings


def audio_digest(audio: np.ndarray) -> str:
  """sha256 of the samples (float32, channels x samples) and their shape."""
  samples = np.ascontiguousarray(np.asarray(audio, np.float32))
  digest = hashlib.sha256(str(samples.shape).encode())
  digest.update(samples.tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class InversionKey:
  model: str  # which model inverted it (the caller's name for it)
  audio: str  # audio_digest
  settings: InversionSettings  # prompt, steps, variant, order, seconds, latent sampling
  windows: tuple  # the window geometry asked for (a long recording's layout)
  record_layers: tuple[int, ...] = ()  # layers whose K/V the inversion recorded


@dataclasses.dataclass
class CacheCounts:
  hits: int = 0
  misses: int = 0


class InversionCache:
  def __init__(self, capacity: int = 16):
    self.capacity = capacity
    self.counts = CacheCounts()
    self._entries: collections.OrderedDict[InversionKey, Inversion] = collections.OrderedDict()
    self._lock = threading.Lock()

  def get(self, key: InversionKey) -> Inversion | None:
    with self._lock:
      found = self._entries.get(key)
      if found is None:
        self.counts.misses += 1
        return None
      self._entries.move_to_end(key)
      self.counts.hits += 1
      return found

  def put(self, key: InversionKey, inversion: Inversion) -> None:
    with self._lock:
      self._entries[key] = inversion
      self._entries.move_to_end(key)
      while len(self._entries) > self.capacity:
        self._entries.popitem(last=False)

  def __len__(self) -> int:
    return len(self._entries)
