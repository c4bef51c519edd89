"""Smoke test of the stable-audio-tools reference (tests/sat_reference.py): builds the tiny SAO-Small-
shaped models, writes and reloads every on-disk format with SAT's own loader, and runs each reference
function once (shapes, finiteness, the few exact facts a reference must get right). Not parity."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools reference is not installed (Makefile .test)")
torch = pytest.importorskip("torch", reason="the PyTorch reference needs CPU torch (make setup-test installs it)")

from tests import sat_reference as S  # noqa: E402

PROMPTS = ["piano solo", "calm ambient synth with warm bass and drums, slow and quiet"]
B, C, T = 2, 4, S.LATENT_FRAMES


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
  root = tmp_path_factory.mktemp("sat")
  return {objective: S.build_tiny(root / objective, objective, seed=seed)
          for seed, objective in enumerate(S.OBJECTIVES)}


@pytest.fixture(scope="module")
def conds(refs):
  return {objective: S.conditioning(ref, PROMPTS, [3.0, 300.0]) for objective, ref in refs.items()}


def _noise(seed, shape=(B, C, T)):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _same_state(a, b):
  sa, sb = S.state_dict(a), S.state_dict(b)
  return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_single_file_layout_and_sat_loader(refs, tmp_path):
  ref = refs["rf_denoiser"]
  weights, config = S.save_safetensors(ref, tmp_path)
  from safetensors import safe_open
  with safe_open(str(weights), "pt") as f:
    keys = set(f.keys())
  assert {k.split(".")[0] + "." + k.split(".")[1] for k in keys} == {"model.model", "conditioner.conditioners",
                                                                      "pretransform.model"}
  assert "model.model.transformer.layers.1.cross_attn.k_norm.bias" in keys
  assert not any(".prompt." in k for k in keys)  # T5 is not in the file; its proj_out is an Identity
  assert _same_state(S.load_model(config, weights, ref.t5_dir), ref)


def test_unwrapped_ckpt_and_lightning_snapshot(refs, tmp_path):
  ref = refs["rectified_flow"]
  weights, config = S.save_unwrapped_ckpt(ref, tmp_path / "base")
  assert weights.name == "base_model.ckpt" and config.name == "base_model_config.json"
  assert _same_state(S.load_model(config, weights, ref.t5_dir), ref)

  weights, config = S.save_lightning_ckpt(ref, tmp_path / "run")
  state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
  dit_key = "transformer.layers.0.self_attn.to_qkv.weight"
  assert {f"diffusion_ema.ema_model.model.{dit_key}", f"diffusion.model.model.{dit_key}",
          "diffusion_ema.initted", "diffusion_ema.step"} <= set(state)
  assert any(k.startswith("diffusion.conditioner.conditioners.seconds_total.") for k in state)
  assert any(k.startswith("diffusion.pretransform.model.decoder.") for k in state)
  assert not torch.equal(state[f"diffusion_ema.ema_model.model.{dit_key}"], state[f"diffusion.model.model.{dit_key}"])
  loaded = S.load_model(config, weights, ref.t5_dir)  # SAT's loader takes the EMA copy
  assert _same_state(loaded, ref)


def test_conditioning(refs, conds):
  cond = conds["rf_denoiser"]
  length = S.TEXT_MAX_LENGTH
  assert cond["input_ids"].shape == cond["attention_mask"].shape == (B, length)
  assert cond["prompt"].shape == (B, length, 768) and cond["seconds_total"].shape == (B, 1, 768)
  assert cond["cross_attn_cond"].shape == (B, length + 1, 768) and cond["global_cond"].shape == (B, 768)
  np.testing.assert_array_equal(cond["cross_attn_cond"][:, :length], cond["prompt"])
  np.testing.assert_array_equal(cond["cross_attn_cond"][:, length], cond["seconds_total"][:, 0])
  np.testing.assert_array_equal(cond["global_cond"], cond["seconds_total"][:, 0])
  padded = cond["attention_mask"] == 0
  assert padded[0].any() and np.all(cond["prompt"][padded] == 0)  # padding zeroed
  assert all(np.isfinite(v).all() for v in cond.values() if v.dtype.kind == "f")
  # 300 s is clamped to max_val 256: same embedding as 256 s
  np.testing.assert_allclose(S.conditioning(refs["rf_denoiser"], PROMPTS[:1], 256.0)["seconds_total"][0],
                             cond["seconds_total"][1], rtol=1e-5, atol=1e-6)
  f32 = S.conditioning(refs["rf_denoiser"], PROMPTS, [3.0, 300.0], t5_dtype="float32")
  assert 0 < np.abs(f32["prompt"] - cond["prompt"]).max() < 0.05 * np.abs(cond["prompt"]).max()


@pytest.mark.parametrize("objective", S.OBJECTIVES)
def test_dit_forward(refs, conds, objective):
  ref, cond = refs[objective], conds[objective]
  x, t = _noise(0), np.array([0.9, 0.3], np.float32)
  v = S.dit_forward(ref, x, t, cond)
  v_cfg = S.dit_forward(ref, x, t, cond, cfg_scale=4.0)  # APG (SAT's default apg_scale=1)
  v_cfg0 = S.dit_forward(ref, x, t, cond, cfg_scale=4.0, apg_scale=0.0)  # plain CFG on denoised
  v_again, hidden = S.dit_forward(ref, x, t, cond, return_hidden_states=True)
  assert v.shape == v_cfg.shape == (B, C, T) and np.isfinite(v_cfg).all() and np.isfinite(v_cfg0).all()
  assert np.abs(v_cfg - v).max() > 1e-3 and np.abs(v_cfg0 - v_cfg).max() > 1e-3
  np.testing.assert_array_equal(v_again, v)
  assert len(hidden) == 2 and hidden[0].shape == (B, 1 + T, 128)


def test_schedules(refs):
  # the default 8-step schedule of SAO Small (docs/sao_small_spec.md, section 5)
  expected = [1, .9944, .9845, .9579, .8909, .7455, .5125, .2739, 0]
  np.testing.assert_allclose(S.rf_schedule(8), expected, atol=1e-4)
  np.testing.assert_array_equal(S.rf_schedule(8, ref=refs["rf_denoiser"]), S.rf_schedule(8))
  options = {"type": "flux", "alpha_min": 3.0, "alpha_max": 3.0}
  shifted = S.build_tiny(refs["rf_denoiser"].t5_dir.parent, save=False,
                         config=S.tiny_config(sampling_distribution_shift_options=options))
  flux = S.rf_schedule(8, ref=shifted)
  np.testing.assert_array_equal(flux, S.rf_schedule(8, shift_options=options))
  u = np.linspace(1, 0, 9)
  np.testing.assert_allclose(flux, 3 * u / (1 + 2 * u), atol=1e-6)
  full = S.rf_schedule(8, shift_options={})  # no "type": SAT builds its "full" DistributionShift
  assert full[0] == 1 and full[-1] == 0 and np.all(np.diff(full) < 0)


def test_samplers(refs, conds):
  ref, cond = refs["rf_denoiser"], conds["rf_denoiser"]
  x, steps = _noise(1), 4
  noise = [_noise(10 + i) for i in range(steps)]
  out, trajectory = S.sample(ref, x, cond, steps=steps, step_noise=noise, return_trajectory=True)
  assert out.shape == (B, C, T) and np.isfinite(out).all()
  np.testing.assert_allclose(trajectory["t"], S.rf_schedule(steps)[:-1], rtol=1e-6)
  np.testing.assert_array_equal(trajectory["x"][0], x)
  # the last step's noise is multiplied by t = 0: the output is the last denoised estimate
  np.testing.assert_allclose(out, trajectory["denoised"][-1], atol=1e-6)
  other = S.sample(ref, x, cond, steps=steps, step_noise=noise[:2] + [_noise(99)] + noise[3:])
  assert np.abs(other - out).max() > 1e-4
  with pytest.raises(AssertionError, match="more random arrays"):
    S.sample(ref, x, cond, steps=steps, step_noise=noise[:2])
  with pytest.raises(AssertionError, match="did not use all"):
    S.sample(ref, x, cond, steps=steps, sampler_type="euler", step_noise=noise)
  rf, rf_cond = refs["rectified_flow"], conds["rectified_flow"]
  euler = S.sample(rf, x, rf_cond, steps=steps, sampler_type="euler", cfg_scale=5.0)
  dpmpp = S.sample(rf, x, rf_cond, steps=steps, sampler_type="dpmpp", cfg_scale=5.0)
  assert euler.shape == dpmpp.shape == (B, C, T) and np.isfinite(euler).all() and np.isfinite(dpmpp).all()


def test_vae(refs):
  ref = refs["rf_denoiser"]
  audio = 0.1 * _noise(2, (B, 2, T * ref.downsampling_ratio))
  mean = S.vae_encode_mean(ref, audio)
  assert mean.shape == (B, C, T) and np.isfinite(mean).all()
  np.testing.assert_allclose(S.vae_encode(ref, audio, np.zeros_like(mean)), mean, atol=1e-6)
  assert np.abs(S.vae_encode(ref, audio, _noise(3)) - mean).max() > 1e-3
  decoded = S.vae_decode(ref, mean)
  assert decoded.shape == audio.shape and np.isfinite(decoded).all()


def test_generate(refs, conds):
  ref, x, steps = refs["rf_denoiser"], _noise(4), 3
  noise = [_noise(20 + i) for i in range(steps)]
  latents = S.generate(ref, PROMPTS, [3.0, 300.0], x, steps=steps, step_noise=noise, sampler_type="pingpong",
                       return_latents=True)
  np.testing.assert_array_equal(latents, S.sample(ref, x, conds["rf_denoiser"], steps=steps, step_noise=noise))
  audio = S.generate(ref, PROMPTS, 5.0, x, steps=steps, step_noise=noise, sampler_type="pingpong")
  assert audio.shape == (B, 2, T * ref.downsampling_ratio) and np.isfinite(audio).all()
  rf = refs["rectified_flow"]  # no sampler_type: generate_diffusion_cond uses euler
  latents = S.generate(rf, PROMPTS, 5.0, x, steps=steps, cfg_scale=4.0, negative_prompts=["rock", "jazz"],
                       return_latents=True)
  assert latents.shape == (B, C, T) and np.isfinite(latents).all()


def test_invert(refs, conds):
  rf = refs["rectified_flow"]
  clean = _noise(5)
  inverted = S.invert(rf, clean, _noise(6), S.conditioning(rf, ["", ""], 5.0), steps=3)
  assert inverted.shape == (B, C, T) and np.isfinite(inverted).all()
  assert np.abs(inverted - clean).max() > 1e-3
