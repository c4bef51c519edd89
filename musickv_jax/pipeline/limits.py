"""The largest size one request may ask for, in one place, each cap with the reason it is where it
is. Every size a person controls (steps, prompts and their text, rows of a sampler call, windows,
optimisation iterations, probe seeds) is checked against its cap before anything is allocated,
with one line that names the setting and the cap (SettingsError, `field` the setting). What a
size costs in memory is also checked against the device by pipeline.memory's estimate (rows, the
K/V a cached edit keeps over its steps, a long recording's windows), which may refuse less than a
cap on a small device: the caps bound what no device could serve, or what would only waste it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from musickv_jax.errors import SettingsError

# Sampling (and inversion) steps. The references run 100 (Stable Audio Open 1.0, Stable Audio 3
# base) or 8 (the distilled models); DPM-Solver++(2M) and the rectified-flow ODE have converged long
# before 1000 (the inversion round trip's ODE error is 0.06 at 100 steps on the tiny model, falling
# at first or second order). Each step adds per-step arrays (sigmas, injection weights, step noise:
# a few KB) and, in the cached mode, a step of K/V (left to the memory check); a billion steps
# asked 7.45 GiB of schedule before the first step (issue 29).
MAX_STEPS = 1000

# Prompts of one run. Every prompt is a row of one sampler call, two with classifier-free
# guidance: 64 prompts at Stable Audio Open 1.0's full window are 128 DiT rows, about 54 GiB of
# working memory by pipeline.memory.dit_row_bytes (Stable Audio 3 Small's 120 s: 58 GiB), about what
# the largest single accelerators hold.
# More edits go into musickv-edit-batch jobs.
MAX_PROMPTS = 64

# Characters of one prompt. T5 reads 128 tokens and T5Gemma 256, a few characters each; the rest is
# cut with a warning. 2,000 characters is several times what either encoder reads, and bounds the
# tokenizer's work on whatever a client sends.
MAX_PROMPT_CHARS = 2000

# Prompt rows of one sampler call (musickv-edit-batch --rows_per_device, musickv-studio
# --rows_per_batch, musickv-probe-layers --variants_per_call, musickv-benchmark --batch) and windows of
# a long recording in one batch (--windows_per_batch). 1024 rows of the smallest real window (SAO
# Small's 256 frames) are about 30 GiB by pipeline.memory.dit_row_bytes, of Stable Audio Open 1.0's
# 432 GiB: the memory check refuses what a given device cannot hold, the cap what none can.
MAX_ROWS = 1024

# Windows a recording longer than the model's window is covered by. A recording is at most as long
# as the seconds conditioning reaches: 512 s in 12 of Stable Audio Open 1.0's 47.55 s windows, 256 s
# in 24 of SAO Small's 11.9 s; 256 windows allow 2 s windows, shorter than any model was trained
# on. Each window is a plan of its own, conditioned and kept for the whole run.
MAX_WINDOWS = 256

# Regions of one edit (--edit_region): each is a span of the latent pasted back at every step;
# more regions than windows would be spans shorter than a second of the longest recording.
MAX_REGIONS = MAX_WINDOWS

# Schedule optimisation iterations (each a forward and backward pass through every sampling step;
# the default is 50). The optimiser keeps a history entry per iteration.
MAX_ITERATIONS = 10_000

# Seeds of a layer probe: each seed is a sampling run per prompt and group of layers (default one).
MAX_SEEDS = 64


def check_at_most(value, cap: int, field: str, unit: str) -> None:
  """Raises SettingsError, one line, when `value` (a whole number) is more than `cap`."""
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > cap:
    raise SettingsError(f"{{field}} {value} is more than {cap} {unit}, the most one request may ask for; ask for "
                        f"at most {cap}", field=field)


def check_steps(steps, field: str = "num_inference_steps") -> None:
  check_at_most(steps, MAX_STEPS, field, "steps")


def check_prompts(prompts: Sequence[str], negative_prompt: str | None = None, field: str = "prompts") -> None:
  """At most MAX_PROMPTS prompts of at most MAX_PROMPT_CHARS characters each (the negative prompt too)."""
  if not isinstance(prompts, str):
    check_at_most(len(prompts), MAX_PROMPTS, field, "prompts")
  texts = [(field, i, p) for i, p in enumerate([prompts] if isinstance(prompts, str) else prompts)]
  texts += [("negative_prompt", 0, negative_prompt)] if negative_prompt is not None else []
  for name, i, text in texts:
    if isinstance(text, str) and len(text) > MAX_PROMPT_CHARS:
      which = f"prompt {i + 1}" if name == field and not isinstance(prompts, str) else "the prompt"
      raise SettingsError(f"{{field}}: {which} has {len(text)} characters, more than {MAX_PROMPT_CHARS}, the most one "
                          f"prompt may have (the text encoder reads far fewer); shorten it", field=name)
