"""The library's errors: one base class, a subclass per kind of trouble.

Every message names the problem and the fix in the library's own terms. An error about a
setting or argument carries its name in `field` (a field of GenerationSettings, EditSettings,
InversionSettings, an argument of convert_checkpoint, ...), and the message is a template with
`{field}` where that name goes (and `{name}` for any other setting listed in `mentions`).
Python callers read "num_inference_steps must be at least 1"; the command-line layer renders
the same error with the flag that fed the field ("--num_inference_steps must be at least 1").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence


class MusicKVError(Exception):
  """Base of every error the library raises on purpose (bad input, bad files)."""

  def __init__(self, template: str, *, field: str | None = None, mentions: Sequence[str] = ()):
    self.field = field
    self.template = template
    self.mentions = tuple(mentions)
    super().__init__(self.describe())

  def describe(self, name_of: Callable[[str], str] = str) -> str:
    """The message with each setting named by `name_of` (its flag, on the command line). Only
    `{field}` and the names in `mentions` are placeholders; other braces are left as they are."""
    names = {m: m for m in self.mentions} | ({"field": self.field} if self.field else {})
    if not names:
      return self.template
    pattern = "|".join(re.escape("{" + key + "}") for key in names)
    return re.sub(pattern, lambda m: name_of(names[m.group(0)[1:-1]]), self.template)

  def __reduce__(self):  # keyword-only arguments: pickle (multiprocessing) needs the recipe
    return (_rebuild, (type(self), self.template, self.field, self.mentions))


def _rebuild(cls, template, field, mentions):
  return cls(template, field=field, mentions=mentions)


class SettingsError(MusicKVError, ValueError):
  """A request (settings, inputs) that cannot be served; `field` names the offending setting."""


class ScheduleError(SettingsError):
  """An injection schedule that cannot be used."""

  def __init__(self, template: str, *, field: str | None = "schedule", mentions: Sequence[str] = ()):
    super().__init__(template, field=field, mentions=mentions)


class AudioError(SettingsError):
  """Audio input or output that cannot be used (`field`: the loading option at fault, if any)."""


class ConfigError(MusicKVError, ValueError):
  """A model config is inconsistent or malformed."""


class CheckpointError(MusicKVError):
  """A converted checkpoint is missing, damaged or does not fit the model."""


class ConversionError(MusicKVError):
  """A checkpoint cannot be converted; the message says what is wrong and what to do."""


class OptimizationError(MusicKVError):
  """An optimisation that cannot go on: its loss or its parameters are no longer finite."""


class TokenizerError(MusicKVError, ValueError):
  """A tokenizer folder that cannot be loaded."""


class NonFiniteError(MusicKVError):
  """A result (samples, latents, a schedule, metrics) that is NaN or infinite: refused where the
  stage that made it ends, so that nothing non-finite is ever written (musickv_jax.finite)."""
