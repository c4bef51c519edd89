"""Recordings longer than the model's window: the window layout and its fusion weights, the
single-window equality with today's path, the identity property across windows, groupings,
the long round trip, and bad input.

The `tiny` model has a 16-frame window at 4 latent frames per second (a 4 s window); its
"songs" are 10 s (40 frames, 3 windows of 4 s overlapping by at least 1 s)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musickv_jax import pipeline
from musickv_jax.pipeline import kv_schedules as kv
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import EditSettings, GenerationSettings, InversionSettings, WindowSettings
from musickv_jax.pipeline import long_recording
from musickv_jax.sampling import guided
from musickv_jax.sampling import windows as windows_lib
from tests import tolerances

WINDOWS = WindowSettings(window_s=4.0, overlap_s=1.0)  # tiny: 16 frames, 4 frames of overlap


@pytest.mark.fast
@pytest.mark.parametrize("frames,window,overlap", [(40, 16, 4), (1000, 352, 87), (353, 352, 0), (5000, 1024, 86),
                                                   (100, 16, 15), (16, 16, 4), (9, 16, 4)])
def test_windows_cover_the_latent_with_weights_that_sum_to_one(frames, window, overlap):
  layout = windows_lib.layout(frames, window, overlap)
  np.testing.assert_allclose(layout.coverage(), 1.0, atol=1e-6)  # at every frame
  starts = np.asarray(layout.starts)
  assert starts[0] == 0 and starts[-1] + layout.width == frames and layout.width == min(window, frames)
  if layout.n_windows > 1:
    assert np.all(starts[:-1] + layout.width - starts[1:] >= overlap)  # every neighbour overlaps enough
    assert layout.n_windows == int(np.ceil((frames - overlap) / (window - overlap)))  # and no window is spare
  weights = layout.weights()
  assert np.all(weights > 0) and np.all(weights <= 1)
  if 1 < overlap <= window // 2 and layout.n_windows > 1:  # smooth: raised cosines, no step beyond their slope
    assert np.max(np.abs(np.diff(weights, axis=1))) <= np.pi / (2 * overlap) + 1e-6


@pytest.mark.fast
@pytest.mark.parametrize("per_group", [1, 2, 3, 5])
def test_fusing_the_windows_of_a_latent_gives_the_latent_back(per_group):
  layout = windows_lib.layout(40, 16, 4)
  x = jax.random.normal(jax.random.key(0), (2, 3, 40))
  windows = layout.arrays(per_group)
  rows = windows_lib.gather(x, windows)
  assert rows.shape == (windows.groups, windows.per_group * 2, 3, 16)
  np.testing.assert_allclose(windows_lib.fuse(rows, windows, 40), x, rtol=1e-6, atol=1e-6)
  # row g * B + b of a group is window g of sample b
  np.testing.assert_array_equal(rows[0, 1], x[1, :, 0:16])


@pytest.mark.fast
def test_group_rows_follow_the_windows():
  # rows [branch][prompt] of 2 prompts with CFG -> [branch][window][prompt] for 3 windows
  values = jnp.asarray([10, 11, 20, 21])
  np.testing.assert_array_equal(windows_lib.group_rows(values, 0, 3, 2), [10, 11, 10, 11, 10, 11, 20, 21, 20, 21, 20, 21])
  # prompt 1 blends from prompt 0 of its own branch; in window g, from window g's prompt 0
  source = np.asarray([0, 0, 2, 2])
  np.testing.assert_array_equal(windows_lib.group_source_index(source, 3, 2), [0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10])


def _bound(model, latents, guidance: float) -> float:
  """The derived float32 bound of two runs rounding in different orders (tests/tolerances.py), for
  windows of the tiny model's full 16 frames, in units of the latents."""
  cfg = model.config
  return tolerances.run_to_run(cfg.dit, cfg.dit.sample_size, cfg.t5.max_length + 2, guidance) * float(np.abs(latents).max())


def _song(model, seconds: float = 10.0, seed: int = 0) -> np.ndarray:
  cfg = model.config
  n = int(seconds * cfg.sample_rate)
  t = np.arange(n) / cfg.sample_rate
  rng = np.random.default_rng(seed)
  return (0.3 * np.sin(2 * np.pi * 3.0 * t)[None] + 0.1 * rng.normal(size=(2, n))).astype(np.float32)


def _edit_settings(prompts, steps, guidance=7.0, **kwargs):
  return EditSettings(GenerationSettings(prompts=tuple(prompts), num_inference_steps=steps, guidance_scale=guidance),
                      vital_layers=(1,), schedule=kv.linear_ramp(steps, 1), **kwargs)


def test_each_window_is_conditioned_on_its_own_start(tiny):
  """Window i of a long recording is conditioned on seconds_start = its first frame's time in the
  recording and seconds_total = the recording's length (SAO's training crops): its plan's rows, and
  the rows the sampler sees for its group, equal the conditioning computed for that start (the same
  function on the same inputs: bitwise). The starts are computed here from the frames, not taken
  from the layout's own seconds."""
  model, cfg = tiny.model, tiny.model.config
  frames = 40
  n_samples = frames * cfg.vae.hop_length
  layout = WINDOWS.layout(cfg, frames)
  assert layout.n_windows == 3 and layout.starts[0] == 0 and all(first > 0 for first in layout.starts[1:])
  prompts = ("piano solo", "jazz")
  settings = _edit_settings(prompts, 4)
  x = np.random.default_rng(0).normal(size=(2, cfg.dit.io_channels, frames)).astype(np.float32)
  total = n_samples / cfg.sample_rate
  plans = long_recording.window_plans(model, settings, x, layout, long_recording.seconds_total(cfg, n_samples),
                                      source_guidance=pipeline.SOURCE_GUIDANCE)
  assert plans[0].use_cfg
  expected = []
  for i, (plan, first) in enumerate(zip(plans, layout.starts)):
    start = first * cfg.vae.hop_length / cfg.sample_rate
    want = pipeline.guided_conditioning(model, prompts, negative_prompt=None, seconds_start=start,
                                        seconds_total=total, guidance=np.asarray([1.0, 7.0], np.float32),
                                        use_cfg=True)
    for name in ("cross_tokens", "global_cond"):
      np.testing.assert_array_equal(getattr(plan.conditioning, name), getattr(want, name),
                                    err_msg=f"window {i} (starts at {start:g} s): {name}")
    np.testing.assert_array_equal(plan.x_init, x[..., first:first + layout.width])
    expected.append(want)
  # the starts matter: windows at other starts are conditioned differently
  assert not np.array_equal(expected[0].global_cond, expected[1].global_cond)
  # what the sampler sees: groups of 2 windows (the second group padded with window 0), rows
  # [branch][window][prompt]
  windows = layout.arrays(2)
  cond, _ = long_recording.grouped(plans, windows)
  n, per_group = len(prompts), windows.per_group
  for g in range(windows.groups):
    for w in range(per_group):
      i = g * per_group + w
      want = expected[i if i < len(plans) else 0]
      for branch in range(2):
        rows = slice(branch * per_group * n + w * n, branch * per_group * n + (w + 1) * n)
        for name in ("cross_tokens", "global_cond"):
          np.testing.assert_array_equal(getattr(cond, name)[g, rows], getattr(want, name)[branch * n:(branch + 1) * n],
                                        err_msg=f"group {g}, window {i}, branch {branch}: {name}")


def test_a_recording_that_fits_one_window_is_edited_bitwise_alike_through_the_windowed_path(tiny):
  """The windowed code, given one window covering the latent, runs exactly today's computation:
  the inversion and the edit latents are bitwise equal (same batch, weight 1)."""
  model = tiny.model
  audio = _song(model, 3.0)
  inv_settings = InversionSettings("piano solo", 6)
  inversion = pipeline.invert_audio(model, audio, inv_settings)
  assert inversion.windows is None  # fits the window: today's path
  frames = inversion.inverted.shape[-1]
  one = windows_lib.layout(frames, frames, 0)
  windowed = long_recording.invert_latents(model, inversion.encoded, inv_settings, WindowSettings(), audio.shape[-1],
                                           layout=one)
  np.testing.assert_array_equal(windowed, inversion.inverted)

  settings = _edit_settings(("piano solo", "acoustic guitar"), 6)
  today = pipeline.edit_recording(model, inversion, settings)
  latents, plan = long_recording.edit_latents(model, settings, np.repeat(inversion.inverted, 2, axis=0),
                                              WindowSettings(), audio.shape[-1], source_guidance=pipeline.SOURCE_GUIDANCE,
                                              layout=one)
  assert plan.roles == today.roles
  np.testing.assert_array_equal(latents, today.latents)


def test_a_long_recording_is_edited_whole_and_the_identity_holds_across_windows(tiny):
  """Edit prompt = source prompt with the source's guidance 1: every edit equals the source
  reconstruction, window after window (joint mode, windows as rows)."""
  model = tiny.model
  audio = _song(model)
  inversion = pipeline.invert_audio(model, audio, InversionSettings("piano solo", 6), windows=WINDOWS)
  layout = WINDOWS.layout(model.config, inversion.inverted.shape[-1])
  assert layout.n_windows == 3 and inversion.inverted.shape[-1] == 40
  settings = _edit_settings(("piano solo", "piano solo", "piano solo"), 6, guidance=1.0, edit_all=True)
  result = pipeline.edit_recording(model, inversion, settings)
  assert result.audio.shape == (3, 2, audio.shape[-1])  # the recording's exact length
  assert result.roles == ["source", "edit", "edit"]
  identity = max(float(np.max(np.abs(result.latents[p] - result.latents[0]))) for p in (1, 2))
  print(f"identity across 3 windows: max |edit - source reconstruction| = {identity:.2e}")
  # exact: the blend own + w (source - own) is own when the two are equal, and equal rows of one
  # batch run the same arithmetic
  assert identity == 0.0
  # a real edit moves away from the source
  edited = pipeline.edit_recording(model, inversion, _edit_settings(("piano solo", "acoustic guitar"), 6))
  assert not np.allclose(edited.latents[1], edited.latents[0], atol=1e-3)
  # the source row is the same, in a batch of another size (2 prompts instead of 3; guidance 1)
  np.testing.assert_allclose(edited.latents[0], result.latents[0], rtol=0, atol=_bound(model, result.latents, 1.0))


def test_windows_in_different_groupings_give_the_same_result(tiny):
  model = tiny.model
  audio = _song(model, seed=1)
  results = []
  for per_batch in (1, 2, None):  # 3 groups of 1; 2 groups of 2 (one padding window); all 3 in one batch
    windows = WindowSettings(window_s=4.0, overlap_s=1.0, windows_per_batch=per_batch)
    inversion = pipeline.invert_audio(model, audio, InversionSettings("piano solo", 5), windows=windows)
    results.append(pipeline.edit_recording(model, inversion, _edit_settings(("piano solo", "jazz"), 5)).latents)
  for other in results[1:]:
    np.testing.assert_allclose(other, results[0], rtol=0, atol=_bound(model, results[0], 7.0))


def _round_trip_error(model, x0, steps, n_samples, windows):
  """Invert, then regenerate with the same prompt and guidance 1; relative L2 error of the latent."""
  settings = InversionSettings("piano solo", steps)
  gen = GenerationSettings(prompts=("piano solo",), num_inference_steps=steps, guidance_scale=1.0)
  cfg = model.config
  if windows is None:
    inverted, _ = pipeline.invert_latents(model, x0, settings)
    cond = pipeline.text_conditioning(model, ["piano solo"], 0.0, cfg.max_audio_seconds)
    out, _ = guided.sample(model.params.dit, guided.GuidedConditioning(cond.cross_tokens, cond.global_cond,
                                                                          jnp.ones((1,))),
                           jnp.asarray(inverted), pipeline.step_plan(gen), jax.random.key(0), dit_config=cfg.dit,
                           use_cfg=False)
  else:
    inverted = long_recording.invert_latents(model, x0, settings, windows, n_samples)
    layout = windows.layout(cfg, x0.shape[-1])
    arrays = layout.arrays(layout.n_windows)
    cond, _ = long_recording.grouped(long_recording.window_plans(model, gen, x0, layout,
                                                                 long_recording.seconds_total(cfg, n_samples)), arrays)
    out, _ = guided.sample_in_chunks(model.params.dit, cond, jnp.asarray(inverted), pipeline.step_plan(gen),
                                     jax.random.key(0), None, None, arrays, dit_config=cfg.dit, use_cfg=False)
  return float(np.linalg.norm(np.asarray(out) - x0) / np.linalg.norm(x0))


def test_the_long_round_trip_converges_like_the_single_window_one(tiny):
  model, cfg = tiny.model, tiny.model.config
  rng = np.random.default_rng(0)
  single = rng.normal(size=(1, cfg.dit.io_channels, 16)).astype(np.float32)
  long = rng.normal(size=(1, cfg.dit.io_channels, 40)).astype(np.float32)
  hop = cfg.vae.hop_length
  one = [_round_trip_error(model, single, steps, 16 * hop, None) for steps in (10, 25, 100)]
  many = [_round_trip_error(model, long, steps, 40 * hop, WINDOWS) for steps in (10, 25, 100)]
  print(f"round trip 10/25/100 steps: one window {one}, 3 windows {many}")
  assert many[0] > many[1] > many[2]
  assert many[2] < 1.5 * one[2]


def test_bad_window_settings_and_too_long_recordings_get_one_clear_line(tiny):
  model, cfg = tiny.model, tiny.model.config
  audio = _song(model)
  settings = InversionSettings("piano solo", 4)
  with pytest.raises(SettingsError, match=r"window_s 9 s does not fit the model: give more than 0 and at most 4\.00 s"):
    pipeline.invert_audio(model, audio, settings, windows=WindowSettings(window_s=9.0))
  with pytest.raises(SettingsError, match=r"overlap_s \(4 s\) must be shorter than the window \(4\.00 s, window_s\)"):
    pipeline.invert_audio(model, audio, settings, windows=WindowSettings(window_s=4.0, overlap_s=4.0))
  with pytest.raises(SettingsError, match=r"but the memory budget \(memory_budget_gib\) is 1e-06 GiB; use a "
                                         "shorter window_s or fewer prompts"):
    pipeline.invert_audio(model, audio, settings, windows=WindowSettings(window_s=4.0, overlap_s=1.0, memory_budget_gib=1e-6))
  with pytest.raises(SettingsError, match="overlap_s must be 0 or more seconds, got nan"):
    pipeline.invert_audio(model, audio, settings, windows=WindowSettings(overlap_s=float("nan")))
  top = cfg.conditioner.seconds_max  # each window's seconds_total is the recording's length
  with pytest.raises(SettingsError, match=f"seconds conditioning reaches {top:g} s: edit a segment"):
    long_recording.check_recording(cfg, int((top + 1) * cfg.sample_rate), WindowSettings())
  with pytest.raises(SettingsError, match="seconds_total does not apply to a recording longer than one window"):
    pipeline.invert_audio(model, audio, InversionSettings("piano solo", 4, seconds_total=10.0), windows=WINDOWS)
  inversion = pipeline.invert_audio(model, audio, settings, windows=WINDOWS)
  with pytest.raises(SettingsError, match="leave out kv_from_inversion"):
    pipeline.edit_recording(model, inversion, _edit_settings(("a", "b"), 4), kv_from_inversion=True)
  with pytest.raises(SettingsError, match="joint injection_mode"):
    pipeline.edit_recording(model, inversion, _edit_settings(("a", "b"), 4, injection_mode="cached"))
  shifted = EditSettings(GenerationSettings(prompts=("a", "b"), num_inference_steps=4, audio_start_in_s=1.0),
                         vital_layers=(1,))
  with pytest.raises(SettingsError, match="audio_start_in_s does not apply to a recording longer than one window"):
    pipeline.edit_recording(model, inversion, shifted)


def test_four_devices_spread_the_windows_and_agree_with_one(tiny, tmp_path):
  """On 4 (simulated) devices the 3 windows' groups are spread over a data mesh (one padding
  group); the inversion and the edit agree with one device to float32 rounding."""
  import os
  import subprocess
  import sys
  from pathlib import Path

  script = f"""
import jax, numpy as np
from musickv_jax import pipeline
from musickv_jax.checkpoint import load_converted
from tests.test_long_recording import WINDOWS, _edit_settings, _song
assert jax.local_device_count() == 4
model = load_converted({str(tiny.path)!r})
inversion = pipeline.invert_audio(model, _song(model, seed=2), pipeline.InversionSettings("piano solo", 4),
                                  windows=WINDOWS)
result = pipeline.edit_recording(model, inversion, _edit_settings(("piano solo", "jazz"), 4))
np.save({str(tmp_path / "four.npy")!r}, result.latents)
"""
  env = os.environ | {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  model = tiny.model
  inversion = pipeline.invert_audio(model, _song(model, seed=2), InversionSettings("piano solo", 4), windows=WINDOWS)
  one = pipeline.edit_recording(model, inversion, _edit_settings(("piano solo", "jazz"), 4)).latents
  four = np.load(tmp_path / "four.npy")
  error = float(np.abs(four - one).max() / np.abs(one).max())
  print(f"4 devices vs 1: {error:.1e}")
  assert error <= _bound(model, one, 7.0) / np.abs(one).max()
