"""Speed machinery that must stay correct: the attention implementations agree, `auto` picks per
backend and dtype, bfloat16 stays close to float32, and the benchmarks produce every field (run
at tiny size; the real-size figures are in docs/performance.md)."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from musickv_jax.cli import benchmark as benchmark_cli
from musickv_jax.models import attention_kernels
from musickv_jax.models.dit import StableAudioDiT
from tests import tolerances
from tests.parity import assert_parity, max_error_ratio
from tests.test_cli import assert_one_line_error, cli


def qkv(shape, dtype=jnp.float32, kv_heads=None, kv_len=None, seed=0):
  batch, length, heads, dim = shape
  keys = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(keys[0], shape, dtype)
  kv_shape = (batch, kv_len or length, kv_heads or heads, dim)
  return q, jax.random.normal(keys[1], kv_shape, dtype), jax.random.normal(keys[2], kv_shape, dtype)


@pytest.mark.parametrize("shape", [(2, 37, 4, 8), (1, 1025, 2, 64), (3, 5, 1, 64)])
def test_every_cpu_implementation_matches_the_einsum_path(shape):
  q, k, v = qkv(shape)
  reference = np.asarray(attention_kernels.dot_product_attention(q, k, v))
  blocked = np.asarray(attention_kernels.blocked_attention(q, k, v))
  jax_xla = np.asarray(jax.nn.dot_product_attention(q, k, v, implementation="xla"))
  assert max_error_ratio(blocked, reference) < 1e-5
  assert max_error_ratio(jax_xla, reference) < 1e-5
  q16, k16, v16 = (a.astype(jnp.bfloat16) for a in (q, k, v))
  blocked16 = np.asarray(attention_kernels.blocked_attention(q16, k16, v16), np.float32)
  reference16 = np.asarray(attention_kernels.dot_product_attention(q16, k16, v16), np.float32)
  # bfloat16 scores (up to ~4) round to 4 * 2^-9 = 7.8e-3 in the probabilities; two paths rounding at
  # different points differ by up to twice that plus the output's 2^-9: 1.8e-2, safety 3 -> 5e-2
  assert max_error_ratio(blocked16, reference16) < 5e-2


@pytest.mark.parametrize("shape,block", [((2, 37, 2, 64), 128), ((1, 200, 2, 64), 128)])
def test_splash_masks_its_padding(shape, block):
  """Splash attention at lengths that are not a multiple of its block (37 -> one block of 128,
  200 -> two blocks, the second mostly padding), its Pallas kernel in interpret mode on the CPU,
  against the einsum path with the module tolerance (tests/parity.py). Padding keys that were not
  kept apart by the segment ids would take part of every real token's softmax (about half of it
  at 37 of 128)."""
  q, k, v = qkv(shape, seed=1)
  reference = np.asarray(attention_kernels.dot_product_attention(q, k, v))
  splash = np.asarray(attention_kernels.splash_attention(q, k, v, block, interpret=True))
  assert_parity(splash, reference, what=f"splash attention, length {shape[1]} in blocks of {block}")


def test_grouped_cross_attention_keeps_the_einsum_path():
  q, k, v = qkv((2, 37, 4, 8), kv_heads=2, kv_len=13)
  out = attention_kernels.attention(q, k, v, "blocked", self_attention=False)
  np.testing.assert_array_equal(np.asarray(out), np.asarray(attention_kernels.dot_product_attention(q, k, v)))


@pytest.mark.fast
def test_auto_picks_per_backend_and_dtype():
  pick = lambda backend, dtype, self_attention=True: attention_kernels.resolve(  # noqa: E731
      "auto", dtype, self_attention=self_attention, backend=backend)
  assert pick("cpu", jnp.float32) == "blocked" and pick("cpu", jnp.bfloat16) == "blocked"
  assert pick("gpu", jnp.bfloat16) == "cudnn" and pick("gpu", jnp.float32) == "xla"
  assert pick("tpu", jnp.bfloat16) == "splash" and pick("tpu", jnp.float32) == "xla"
  assert pick("cpu", jnp.float32, self_attention=False) == "xla"
  assert pick("gpu", jnp.bfloat16, self_attention=False) == "cudnn"
  with pytest.raises(ValueError, match="unknown attention implementation 'fast'"):
    attention_kernels.resolve("fast", jnp.float32, self_attention=True)


def test_the_dit_with_each_cpu_implementation(tiny64):
  cfg = tiny64.model.config.dit
  rng = np.random.default_rng(0)
  args = (jnp.asarray(rng.normal(size=(2, cfg.io_channels, 37)), jnp.float32), jnp.asarray([0.3, 0.8]),
          jnp.asarray(rng.normal(size=(2, 5, cfg.cond_input_dim)), jnp.float32),
          jnp.asarray(rng.normal(size=(2, cfg.global_cond_dim)), jnp.float32))
  outs = {impl: np.asarray(StableAudioDiT(dataclasses.replace(cfg, attention=impl)).apply(
      {"params": tiny64.model.params.dit}, *args)[0]) for impl in ("xla", "blocked")}
  assert max_error_ratio(outs["blocked"], outs["xla"]) < 1e-5


def test_bfloat16_stays_close_to_float32(tiny44k):
  """bfloat16 parameters and matmuls (float32 softmax and norms) against float32 on the tiny random
  model (configs/tiny). Measured: one DiT call 1.8e-2, the final latents of a 4-step edit 0.25 (a
  random 24-layer model amplifies every difference over the steps); docs/performance.md has the
  real-size figures."""
  from musickv_jax import pipeline
  from musickv_jax.checkpoint import load_converted
  from musickv_jax.pipeline.settings import EditSettings, GenerationSettings

  f32, bf16 = load_converted(tiny44k.path), load_converted(tiny44k.path, dtype="bfloat16")
  cfg = f32.config.dit
  rng = np.random.default_rng(0)
  args = (jnp.asarray(rng.normal(size=(2, cfg.io_channels, 64)), jnp.float32), jnp.asarray([0.3, 0.8]),
          jnp.asarray(rng.normal(size=(2, 130, cfg.cond_input_dim)), jnp.float32),
          jnp.asarray(rng.normal(size=(2, cfg.global_cond_dim)), jnp.float32))
  calls = [np.asarray(StableAudioDiT(m.config.dit).apply({"params": m.params.dit}, *args)[0]) for m in (f32, bf16)]
  call_error = float(np.linalg.norm(calls[1] - calls[0]) / np.linalg.norm(calls[0]))
  gen = GenerationSettings(prompts=("piano solo", "acoustic guitar"), num_inference_steps=4, audio_end_in_s=2.0,
                           latent_length="fit")
  a, b = (pipeline.edit(m, EditSettings(gen, vital_layers=(20, 3, 4))) for m in (f32, bf16))
  edit_error = float(np.linalg.norm(b.latents - a.latents) / np.linalg.norm(a.latents))
  print(f"bfloat16 vs float32: DiT call {call_error:.1e}, final latents of a 4-step edit {edit_error:.1e}")
  # rms of bfloat16 roundings over ~L = depth x 10 + 5 stages: sqrt(L) 2^-9 / sqrt(3) = 1.4e-2 here; safety 7
  stages = cfg.depth * tolerances.STAGES_PER_BLOCK + tolerances.STAGES_OUTSIDE
  assert 0 < call_error < 7 * np.sqrt(stages) * 2.0 ** -9 / np.sqrt(3)
  assert 0 < edit_error < 1.0 and np.all(np.isfinite(b.latents))


def test_the_step_benchmark_reports_every_field(tmp_path, capsys):
  status, out, err = cli(capsys, benchmark_cli, "--config", "tiny", "--lengths", "16,8", "--repeats", "1", "--torch",
                         "--json_out", tmp_path / "b.json")
  assert status == 0, err
  report = json.loads((tmp_path / "b.json").read_text())
  assert set(report["matmul_peak_gflop_per_s"]) == {"jax", "torch"} and report["torch_threads"] >= 1
  for frames in ("16", "8"):
    entry = report["lengths"][frames]
    assert set(entry["ours_over_diffusers"]) == {"dit", "edit_step"}
    for framework in ("ours", "diffusers"):
      for case in ("dit", "edit_step"):
        result = entry[framework][case]
        assert {"seconds", "runs_s", "tflop", "gflop_per_s", "fraction_of_matmul_peak",
                "peak_rss_increase_mib"} <= set(result)
        assert result["seconds"] > 0 and result["tflop"] > 0
    assert entry["ours"]["dit"]["compile_s"] > 0 and entry["ours"]["edit_step"]["xla_memory_mib"]["temp"] >= 0
  assert "| 16 | edit_step | ours |" in out


def test_the_job_benchmark_reports_every_field(tmp_path, capsys):
  status, out, err = cli(capsys, benchmark_cli, "--job", "--config", "tiny", "--torch", "--job_steps", "2",
                         "--job_edits", "2", "--job_seconds", "2", "--json_out", tmp_path / "j.json")
  assert status == 0, err
  report = json.loads((tmp_path / "j.json").read_text())
  for way in ("ours", "reference"):
    assert {"measured_s", "per_step_s", "fixed_s", "job_100_steps_s"} <= set(report[way])
  assert report["reference"]["runs"] == 2 and np.isfinite(report["reference_over_ours"])
  assert len(report["fit_vs_full_audio"]["relative_l2_per_prompt"]) == 3
  assert "reference / ours" in out
  assert report["decode"]["kept_frames_s"] > 0 and "kept frames only" in out


def test_the_long_recording_benchmark_reports_cost_per_second_of_audio(tmp_path, capsys):
  status, out, err = cli(capsys, benchmark_cli, "--config", "tiny", "--long_seconds", "40", "--long_steps", "2",
                         "--json_out", tmp_path / "l.json")
  assert status == 0, err
  report = json.loads((tmp_path / "l.json").read_text())
  assert report["windows"] == 3 and report["latent_frames"] == 862  # 40 s in 16.35 s windows
  assert report["compute_s_per_audio_s"] > 0 and report["edit_per_step_s"] > 0
  assert "s of compute per second of audio" in out


def test_the_precision_benchmark_reports_both_dtypes(tmp_path, capsys):
  """--precision ran into ModelParams.items() (a dict method) for months with no test: run it."""
  status, out, err = cli(capsys, benchmark_cli, "--precision", "--config", "tiny", "--lengths", "8", "--repeats", "1",
                         "--json_out", tmp_path / "p.json")
  assert status == 0, err
  report = json.loads((tmp_path / "p.json").read_text())
  assert set(report["dit_call_s"]) == {"float32", "bfloat16"} and report["frames"] == 8
  # bfloat16 moves a DiT call by more than float32 rounding and far less than its size
  assert 1e-5 < report["dit_call_relative_l2"] < 0.1 and np.isfinite(report["edit_latents_relative_l2"])


def test_the_breakdown_benchmark_times_each_part_of_a_layer(tmp_path, capsys):
  status, out, err = cli(capsys, benchmark_cli, "--breakdown", "--config", "tiny", "--lengths", "8", "--repeats", "1",
                         "--json_out", tmp_path / "d.json")
  assert status == 0, err
  layers = json.loads((tmp_path / "d.json").read_text())["layers"]
  assert len(layers) == 1 and layers[0]["frames"] == 8


def test_the_small_edit_benchmark_times_warm_and_cold_runs(tmp_path, capsys):
  """--small_edit on the tiny model: a warm edit in this process, then the cold command line and its
  parts (bench/edit_parts.py) in fresh processes."""
  status, out, err = cli(capsys, benchmark_cli, "--small_edit", "--config", "tiny", "--edit_seconds", "1",
                         "--repeats", "1", "--json_out", tmp_path / "s.json")
  assert status == 0, err
  report = json.loads((tmp_path / "s.json").read_text())
  assert report["warm"]["median_s"] > 0 and report["warm"]["audio_s"] == 1.0
  assert report["cold"]["command_line_wall_s"] > 0
  assert set(report["cold"]["parts"]) == {"import_s", "load_s", "t5_and_conditioning_s", "compile_s", "sampling_s",
                                          "decode_s"}
  assert "cold command line" in out


def test_the_edit_methods_benchmark_counts_and_times_each_method(tmp_path, capsys):
  """--edit_methods on the tiny model: each way to edit a recording, its DiT rows (inversion: its
  steps plus the edit's) and warm wall time."""
  status, out, err = cli(capsys, benchmark_cli, "--edit_methods", "--config", "tiny", "--edit_seconds", "2",
                         "--repeats", "1", "--json_out", tmp_path / "m.json")
  assert status == 0, err
  report = json.loads((tmp_path / "m.json").read_text())
  methods = {m["method"]: m for m in report["methods"]}
  assert list(methods) == ["inversion", "flowedit", "sdedit"]
  steps = methods["inversion"]["steps"]
  rows = 2 * 2  # source + edit, with CFG (tiny: guidance 7)
  assert methods["inversion"]["dit_rows"] == steps + steps * rows and methods["inversion"]["inversion_dit_rows"] == steps
  assert methods["flowedit"]["dit_rows"] == steps * rows and methods["flowedit"]["inversion_dit_rows"] == 0
  assert methods["sdedit"]["dit_rows"] == steps * rows and methods["sdedit"]["init_noise_level"] == 0.6
  assert all(m["median_s"] > 0 for m in report["methods"])
  assert "| inversion |" in out and "| sdedit |" in out


def test_the_sa3_step_benchmark_reports_every_field(tmp_path, capsys):
  """--config tiny-sa3: our SA3 DiT call (2 rows: source and edit at guidance 1) against diffusers'
  StableAudio3DiTModel holding our weights (bench/sa3.py, bench/sa3_torch.py)."""
  status, out, err = cli(capsys, benchmark_cli, "--config", "tiny-sa3", "--lengths", "8", "--repeats", "1", "--torch",
                         "--json_out", tmp_path / "b.json")
  assert status == 0, err
  report = json.loads((tmp_path / "b.json").read_text())
  assert report["family"] == "sa3" and report["batch"] == 2 and report["cond_tokens"] == 33
  assert set(report["matmul_peak_gflop_per_s"]) == {"jax", "torch"} and report["torch_threads"] >= 1
  entry = report["lengths"]["8"]
  for framework in ("ours", "diffusers"):
    result = entry[framework]["dit"]
    assert {"seconds", "runs_s", "tflop", "gflop", "gflop_per_s", "fraction_of_matmul_peak",
            "peak_rss_increase_mib"} <= set(result)
    assert result["seconds"] > 0 and result["gflop"] > 0 and result["gflop_per_s"] > 0
    assert 0 < result["fraction_of_matmul_peak"] < np.inf
  assert entry["ours"]["dit"]["compile_s"] > 0 and entry["ours"]["dit"]["xla_memory_mib"]["temp"] >= 0
  # the same weights and inputs: float32 parity (tests/parity.py's 1e-5 of the largest value)
  assert entry["diffusers"]["dit"]["max_error_ratio"] < 1e-5
  assert np.isfinite(entry["ours_over_diffusers"]["dit"]) and entry["ours_over_diffusers"]["dit"] > 0
  assert "| 8 | ours |" in out and "| 8 | diffusers |" in out


def test_the_sa3_edit_benchmark_times_warm_cold_and_diffusers(tmp_path, capsys):
  """--sa3_edit on tiny-sa3: a warm edit with its parts in this process, the cold command line and its
  parts in fresh processes, and diffusers' StableAudio3Pipeline holding the same weights (source and
  edit generated separately, the same 8 ping-pong steps at guidance 1)."""
  status, out, err = cli(capsys, benchmark_cli, "--sa3_edit", "--config", "tiny-sa3", "--edit_seconds", "1",
                         "--repeats", "1", "--json_out", tmp_path / "s.json")
  assert status == 0, err
  report = json.loads((tmp_path / "s.json").read_text())
  assert report["latent_frames"] == 11  # ceil(1 s x 44100 / 4096)
  warm = report["warm"]
  assert warm["median_s"] > 0 and warm["audio_s"] == 1.0
  assert (warm["sampler"], warm["steps"], warm["guidance_scale"]) == ("pingpong", 8, 1.0)
  assert set(warm["parts"]) == {"t5_and_conditioning_s", "sampling_s", "decode_s"}
  assert all(value > 0 for value in warm["parts"].values())
  assert report["cold"]["command_line_wall_s"] > 0
  assert set(report["cold"]["parts"]) == {"import_s", "load_s", "t5_and_conditioning_s", "compile_s", "sampling_s",
                                          "decode_s"}
  reference = report["reference"]
  assert reference["median_s"] > 0 and reference["calls"] == 2 and reference["steps"] == 8
  assert set(reference["parts"]) == {"t5_and_conditioning_s", "sampling_s", "dit_s", "decode_s"}
  assert 0 < reference["parts"]["dit_s"] <= reference["parts"]["sampling_s"]
  assert np.isfinite(report["reference_over_warm"]) and report["reference_over_warm"] > 0
  assert "ours cold command line" in out and "diffusers / ours warm" in out


@pytest.mark.fast
@pytest.mark.parametrize("argv,message", [
    (["--sa3_edit", "--config", "tiny"], "--sa3_edit needs a Stable Audio 3 config"),
    (["--config", "tiny-sa3", "--job"], "Stable Audio 3 configs are benchmarked by"),
    (["--sa3_edit", "--edit_seconds", "0"], "--edit_seconds must be positive")])
def test_the_sa3_benchmarks_refuse_what_they_cannot_run(argv, message, capsys):
  status, out, err = cli(capsys, benchmark_cli, *argv)
  assert_one_line_error(status, err, message, expected_status=2)


@pytest.mark.parametrize("variant,frames,local", [("tiny-sa3", 8, False), ("tiny-sa3", 64, True),
                                                  ("plain", 8, False)])
def test_the_sa3_flop_count_matches_xla_cost_analysis(variant, frames, local):
  """bench.sa3.sa3_dit_flops against XLA's own count of the compiled DiT call (cost_analysis 'flops'),
  on a 1-layer tiny-sa3 DiT with the einsum attention: XLA counts the body of a loop once, and both
  the scanned blocks and the blocked attention (CPU's `auto`: a lax.map over (row, head) slices) are
  loops, so only so is its figure the whole call. XLA also counts the elementwise work (norms, softmax,
  rotary, gates, SiLU), which the formula leaves out: at this width (64) a few percent. Measured
  (ours / XLA): 0.966 at 8 frames, 0.955 at 64 frames with the local conditioning, 0.972 without
  differential attention and memory tokens. Leaving out the context's kv projection would give
  0.75 at 8 frames, the feed-forward 0.65."""
  from musickv_jax.bench import sa3
  from musickv_jax.config import named_config
  from musickv_jax.models.sao import random_params

  config = named_config("tiny-sa3")
  dit = dataclasses.replace(config.dit, depth=1, attention="xla")
  if variant == "plain":
    dit = dataclasses.replace(dit, differential=False, num_memory_tokens=0)
  config = config.replace(dit=dit)
  inputs = sa3.make_inputs(config, 2, frames)
  local_cond = np.ones((2, dit.local_add_cond_dim, frames), np.float32) if local else None
  xla = sa3.xla_flops(config, random_params(config, 0).dit, inputs, local_cond)
  ours = sa3.sa3_dit_flops(config, 2, frames, config.cross_tokens, local=local)
  print(f"{variant}, {frames} frames, local {local}: ours {ours:.0f}, XLA {xla:.0f}, ours / XLA {ours / xla:.3f}")
  assert 0.94 < ours / xla <= 1.0
