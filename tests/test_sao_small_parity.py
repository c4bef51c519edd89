"""Stable Audio Open Small and the rectified-flow family against stable-audio-tools 0.0.20's own code
(tests/sat_reference.py): tiny random SAO-Small-shaped models in the real on-disk formats
(model.safetensors + model_config.json, base_model.ckpt + base_model_config.json, a Lightning
training snapshot with EMA weights), converted by our converter, compared component by component
and end to end. Tolerances: one module 1e-5 x max|reference|, a whole run 1e-4 relative, float32
(SAT's T5 runs in float32 here, as diffusers and our port run it)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools reference is not installed (Makefile .test)")
torch = pytest.importorskip("torch", reason="the PyTorch reference needs CPU torch (make setup-test installs it)")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from musickv_jax import pipeline  # noqa: E402
from musickv_jax.checkpoint import load_converted  # noqa: E402
from musickv_jax.config import DistributionShift  # noqa: E402
from musickv_jax.convert.pipeline import convert_checkpoint  # noqa: E402
from musickv_jax.errors import ConversionError  # noqa: E402
from musickv_jax.models import vae_ops  # noqa: E402
from musickv_jax.models.dit import KVControls, StableAudioDiT  # noqa: E402
from musickv_jax.pipeline import GenerationSettings  # noqa: E402
from musickv_jax.sampling import guided, rf_schedules  # noqa: E402
from tests import sat_reference as S  # noqa: E402
from tests.parity import assert_parity  # noqa: E402

PROMPTS = ["piano solo", "calm ambient synth with warm bass and drums, slow and quiet"]
SECONDS = 3.0
C, T = 4, S.LATENT_FRAMES


class Small:
  """A SAT reference model and its conversion."""

  def __init__(self, ref: S.SATModel, path, model):
    self.ref, self.path, self.model = ref, path, model


def _convert(weights, t5_dir, output) -> Small:
  convert_checkpoint(weights, output, t5_dir=t5_dir, log=lambda message: None)
  return load_converted(output)


@pytest.fixture(scope="module")
def smalls(tmp_path_factory) -> dict[str, Small]:
  """Both objectives: rf_denoiser as model.safetensors, rectified_flow as base_model.ckpt."""
  root = tmp_path_factory.mktemp("sao-small")
  ARC = S.build_tiny(root / "arc", "rf_denoiser", seed=0)
  base = S.build_tiny(root / "base", "rectified_flow", seed=1, save=False)
  weights, _ = S.save_unwrapped_ckpt(base, root / "base")
  return {"rf_denoiser": Small(ARC, root / "arc-converted",
                               _convert(root / "arc" / "model.safetensors", ARC.t5_dir, root / "arc-converted")),
          "rectified_flow": Small(base, root / "base-converted", _convert(weights, base.t5_dir, root / "base-converted"))}


def _noise(seed, shape=(len(PROMPTS), C, T)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _cond(small: Small, use_cfg: bool, guidance: float):
  n = len(PROMPTS)
  return pipeline.guided_conditioning(small.model, PROMPTS, negative_prompt=None, seconds_start=0.0,
                                      seconds_total=SECONDS, guidance=np.full(n, guidance, np.float32), use_cfg=use_cfg)


# ----------------------------------------------------------------------------- the checkpoint and its config


def test_the_config_is_read_from_the_checkpoint(smalls):
  cfg = smalls["rf_denoiser"].model.config
  assert cfg.diffusion.objective == "rf_denoiser" and smalls["rectified_flow"].model.config.diffusion.objective \
      == "rectified_flow"
  assert cfg.dit.qk_norm == "ln" and cfg.dit.qk_norm_eps == 1e-6
  assert cfg.conditioner.numbers == ("seconds_total",) and cfg.conditioner.global_numbers == ("seconds_total",)
  assert (cfg.dit.cond_input_dim, cfg.dit.cond_token_dim, cfg.dit.cross_kv_heads) == (768, 128, 2)  # projected
  assert (cfg.dit.global_cond_dim, cfg.conditioner.seconds_max, cfg.t5.max_length) == (768, 256.0, S.TEXT_MAX_LENGTH)
  assert cfg.dit.sample_size == T and cfg.diffusion.shift == DistributionShift()  # LogSNR, rate 0
  assert cfg.diffusion.defaults.sampler == "pingpong" and cfg.diffusion.defaults.steps == 8
  assert smalls["rectified_flow"].model.config.diffusion.defaults.sampler == "euler"


def test_a_lightning_snapshot_gives_its_ema_weights(smalls, tmp_path):
  ref = smalls["rectified_flow"].ref
  weights, _ = S.save_lightning_ckpt(ref, tmp_path / "run")
  (tmp_path / "run" / "model_config.json").write_text((tmp_path / "run" / f"{weights.stem}_config.json").read_text()
                                                      if (tmp_path / "run" / f"{weights.stem}_config.json").exists()
                                                      else __import__("json").dumps(ref.config))
  snapshot = _convert(weights, ref.t5_dir, tmp_path / "converted")
  expected = smalls["rectified_flow"].model.params
  for got, want in zip(jax.tree.leaves(snapshot.params.dit), jax.tree.leaves(expected.dit)):
    np.testing.assert_array_equal(got, want)  # the EMA copy, not the online weights


def test_tensors_that_do_not_fit_the_config_are_refused_in_one_line(smalls, tmp_path):
  import json
  ref = smalls["rf_denoiser"].ref
  config = json.loads(json.dumps(ref.config))
  config["model"]["diffusion"]["config"]["embed_dim"] = 256  # the weights were made with 128
  (tmp_path / "model_config.json").write_text(json.dumps(config))
  S.save_safetensors(ref, tmp_path / "weights")
  with pytest.raises(ConversionError) as err:
    convert_checkpoint(tmp_path / "weights" / "model.safetensors", tmp_path / "out", t5_dir=ref.t5_dir,
                       model_config=tmp_path / "model_config.json", log=lambda message: None)
  message = str(err.value)
  assert "\n" not in message and "has shape" in message and "but the model config needs" in message
  assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- components


def test_conditioning_matches(smalls):
  small = smalls["rf_denoiser"]
  ref = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  ours = pipeline.text_conditioning(small.model, PROMPTS, 0.0, SECONDS)
  assert_parity(np.asarray(ours.cross_tokens), ref["cross_attn_cond"], what="cross-attention tokens")
  assert_parity(np.asarray(ours.global_cond), ref["global_cond"], what="global conditioning")


@pytest.mark.parametrize("objective", ["rf_denoiser", "rectified_flow"])
def test_one_dit_call_matches(smalls, objective):
  small = smalls[objective]
  cond = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  x, t = _noise(0), np.asarray([0.9, 0.3], np.float32)
  ref = S.dit_forward(small.ref, x, t, cond)
  dit = StableAudioDiT(small.model.config.dit)
  ours, _ = dit.apply({"params": small.model.params.dit}, jnp.asarray(x), jnp.asarray(t),
                      jnp.asarray(cond["cross_attn_cond"]), jnp.asarray(cond["global_cond"]))
  assert_parity(np.asarray(ours), ref, what=f"{objective} DiT call")


@pytest.mark.parametrize("w", [0.3, 0.5])
def test_a_fractional_blend_mixes_the_normalised_rotated_keys(smalls, w):
  """Row 1 blends row 0's K/V in layer 1 with a weight strictly between 0 and 1, against SAT's
  attention with the blend at the last moment: on the keys attention sees (q/k LayerNorm and
  rotary applied) and the values. At 0 and 1 a blend before the norm agrees; in between it does not."""
  small = smalls["rf_denoiser"]
  cond = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  x, t = _noise(2), np.asarray([0.6, 0.6], np.float32)
  attn = small.ref.model.model.model.transformer.layers[1].self_attn
  assert attn.qk_norm == "ln"  # the case where the order matters

  def apply_attn(q, k, v, **kwargs):  # (B, H, N, D): row 1 <- w row 0 + (1 - w) row 1
    k, v = k.clone(), v.clone()
    k[1], v[1] = w * k[0] + (1 - w) * k[1], w * v[0] + (1 - w) * v[1]
    return type(attn).apply_attn(attn, q, k, v, **kwargs)

  attn.apply_attn = apply_attn
  try:
    ref = S.dit_forward(small.ref, x, t, cond)
  finally:
    del attn.apply_attn
  cfg = small.model.config.dit
  dit, args = StableAudioDiT(cfg), (jnp.asarray(x), jnp.asarray(t), jnp.asarray(cond["cross_attn_cond"]),
                                    jnp.asarray(cond["global_cond"]))
  controls = KVControls(inject_weight=jnp.zeros((cfg.depth, 2)).at[1, 1].set(w), source_index=jnp.array([0, 0]))
  ours, _ = dit.apply({"params": small.model.params.dit}, *args, controls)
  plain, _ = dit.apply({"params": small.model.params.dit}, *args)
  assert_parity(np.asarray(ours), ref, what=f"layer 1 blended at w={w}")
  assert np.max(np.abs(np.asarray(plain)[1] - ref[1])) > 1e-2 * np.max(np.abs(ref))  # the blend moved row 1


@pytest.mark.parametrize("objective", ["rf_denoiser", "rectified_flow"])
def test_guided_denoiser_matches_cfg_on_the_denoised_estimates(smalls, objective):
  """CFG as stable-audio-tools applies it to the denoised estimates, D_c + (g - 1)(D_c - D_u)
  (vanilla: apg_scale 0); the reference returns it as a velocity (x - D) / t."""
  small = smalls[objective]
  cond = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  x, t, g = _noise(1), 0.7, 4.0
  ref_v = S.dit_forward(small.ref, x, np.full(2, t, np.float32), cond, cfg_scale=g, apg_scale=0.0)
  plan = pipeline.step_plan(GenerationSettings(prompts=("a",), num_inference_steps=4), small.model.config, T)
  step = jax.tree.map(lambda a: a[1], plan)
  step = step.replace(sigma=jnp.float32(t), timestep=jnp.float32(t), c_out=jnp.float32(t))
  denoise = guided.guided_denoiser(small.model.params.dit, small.model.config.dit, _cond(small, True, g), use_cfg=True)
  ours, _ = denoise(jnp.asarray(x), step, None)
  assert_parity(np.asarray(ours), x - t * ref_v, what="guided denoised estimate")


@pytest.mark.parametrize("options", [None, {"type": "logsnr"}, {"type": "logsnr", "rate": 0.5, "anchor_length": 64},
                                     {"type": "flux", "alpha_max": 3.0}, {"type": "full"},
                                     {"type": "full", "use_sine": True}, {"type": "none"}])
@pytest.mark.parametrize("steps,length", [(8, 16), (25, 256), (3, 5000)])
def test_rf_schedules_match(options, steps, length):
  from musickv_jax.convert.sources import _shift
  shift = _shift({} if options is None else {"sampling_distribution_shift_options": options}, "test")
  ours = rf_schedules.rf_times(steps, shift, length)
  ref = S.rf_schedule(steps, shift_options=options, seq_len=length)
  np.testing.assert_allclose(ours, ref, rtol=0, atol=4 * 2.0 ** -24)  # both float32 roundings of the same values
  assert ours[0] == 1.0 and ours[-1] == 0.0


def test_the_vae_matches(smalls):
  small = smalls["rf_denoiser"]
  audio = np.random.default_rng(2).uniform(-0.5, 0.5, (1, 2, 64)).astype(np.float32)
  mean = vae_ops.encode(small.model.params.vae, audio, small.model.config.vae).mean
  assert_parity(np.asarray(mean), S.vae_encode_mean(small.ref, audio), what="VAE posterior mean")
  latents = _noise(3, (1, C, T))
  decoded = vae_ops.decode(small.model.params.vae, latents, small.model.config.vae)
  assert_parity(np.asarray(decoded), S.vae_decode(small.ref, latents), what="VAE decode")


# ----------------------------------------------------------------------------- samplers and whole runs


def _run(small: Small, steps: int, guidance: float, sampler: str, x_init, step_noise=None, seconds: float = SECONDS):
  gen = GenerationSettings(prompts=tuple(PROMPTS), num_inference_steps=steps, guidance_scale=guidance,
                           sampler=sampler, audio_end_in_s=small.model.config.max_audio_seconds)
  plan = pipeline.build_plan(small.model, gen, x_init, step_noise=step_noise,
                             seconds=(0.0, seconds))
  latents, _ = pipeline.plan.run_plan(small.model, plan)
  return latents


@pytest.mark.parametrize("objective", ["rf_denoiser", "rectified_flow"])
def test_the_pingpong_sampler_matches_given_the_same_step_noise(smalls, objective):
  small, steps = smalls[objective], 8
  x_init, noise = _noise(4), _noise(5, (steps, 1, C, T))
  ours = _run(small, steps, 1.0, "pingpong", x_init, noise)
  cond = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  ref = S.sample(small.ref, x_init, cond, steps=steps, sampler_type="pingpong",
                 step_noise=[np.repeat(n, len(PROMPTS), axis=0) for n in noise])
  assert_parity(ours, ref, 1e-4, f"{objective} ping-pong, {steps} steps")


@pytest.mark.parametrize("objective", ["rf_denoiser", "rectified_flow"])
def test_euler_with_cfg_matches(smalls, objective):
  small, steps, g = smalls[objective], 12, 5.0
  x_init = _noise(6)
  ours = _run(small, steps, g, "euler", x_init)
  cond = S.conditioning(small.ref, PROMPTS, SECONDS, t5_dtype="float32")
  ref = S.sample(small.ref, x_init, cond, steps=steps, sampler_type="euler", cfg_scale=g, apg_scale=0.0)
  assert_parity(ours, ref, 1e-4, f"{objective} Euler with CFG {g:g}, {steps} steps")


def test_musickv_generate_matches_stable_audio_tools(smalls, tmp_path):
  """The command end to end: musickv-generate with --init_latents and --step_noise against
  stable-audio-tools' generate_diffusion_cond (ping-pong, 8 steps, guidance 1: the model's defaults,
  none of them given on the command line), its noise fed the same arrays."""
  from musickv_jax.cli import generate as generate_cli
  from musickv_jax.cli.runner import run
  import soundfile as sf

  small, steps = smalls["rf_denoiser"], 8
  window = small.model.config.max_audio_seconds
  x_init, noise = _noise(7), _noise(8, (steps, 1, C, T))
  np.save(tmp_path / "x.npy", x_init)
  np.save(tmp_path / "noise.npy", noise)
  status = run(generate_cli.COMMAND, ["--model", str(small.path), "--prompts", *PROMPTS, "--audio_end_in_s", str(window),
                                      "--init_latents", str(tmp_path / "x.npy"), "--step_noise", str(tmp_path / "noise.npy"),
                                      "--save_latents", str(tmp_path / "latents.npy"), "--output_path", str(tmp_path / "out")])
  assert status == 0
  ref = S.generate(small.ref, PROMPTS, window, x_init, steps=steps, step_noise=[np.repeat(n, 2, axis=0) for n in noise],
                   sampler_type="pingpong", t5_dtype="float32")
  for i in range(len(PROMPTS)):
    audio, rate = sf.read(next((tmp_path / "out").glob(f"{i}_*.wav")), dtype="float32", always_2d=True)
    assert rate == 44100 and audio.shape == (ref.shape[-1], 2)
    assert_parity(audio.T, ref[i], 1e-4, f"musickv-generate audio, prompt {i + 1}")
