"""Nothing non-finite is ever written. Every stage whose result a command writes (sampling,
decoding, encoding, inversion, schedule optimisation, metrics, layer probing) ends with
`require_finite`, which refuses a result holding NaN or infinite values with one line naming that
stage (NonFiniteError), before anything is written; the writers (writers.sets, audio.save_wav)
refuse such values too, as the last line of defence, so a stage that forgot cannot write them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from musickv_jax.errors import NonFiniteError


def count_non_finite(value) -> tuple[int, int]:
  """(values that are NaN or infinite, numbers) in an array, a number, or mappings and sequences of
  them (a record: strings, booleans, None and other objects are not numbers and are skipped)."""
  if isinstance(value, (bool, np.bool_)):
    return 0, 0
  if isinstance(value, (int, float, np.number)):
    return (0 if math.isfinite(value) else 1), 1
  if isinstance(value, Mapping):
    return _total(count_non_finite(item) for item in value.values())
  if isinstance(value, (list, tuple)):
    return _total(count_non_finite(item) for item in value)
  if isinstance(value, np.ndarray) or hasattr(value, "__array__"):  # NumPy and JAX arrays
    array = np.asarray(value)
    if array.dtype == object:
      return _total(count_non_finite(item) for item in array.ravel().tolist())
    if np.issubdtype(array.dtype, np.inexact):
      return int(array.size - np.count_nonzero(np.isfinite(array))), int(array.size)
    return 0, int(array.size) if np.issubdtype(array.dtype, np.number) else 0
  return 0, 0


def _total(counts) -> tuple[int, int]:
  bad = total = 0
  for b, t in counts:
    bad, total = bad + b, total + t
  return bad, total


def require_finite(value, *, stage: str, what: str, advice: str = "", mentions: Sequence[str] = ()) -> None:
  """Raises NonFiniteError, one line: "STAGE produced non-finite WHAT (N of M values are NaN or
  infinite); nothing was written[; ADVICE]". advice may name settings as {name} (listed in
  `mentions`), which the command line renders as its flags."""
  bad, total = count_non_finite(value)
  if bad:
    raise NonFiniteError(f"{stage} produced non-finite {what} ({bad} of {total} values are NaN or infinite); "
                         "nothing was written" + (f"; {advice}" if advice else ""), mentions=mentions)
