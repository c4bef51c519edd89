"""The Stable Audio 3 reference harness (tests/sa3_reference.py) is sound: the saved folder is the real
diffusers layout and loads back to the same output, every weight is random, the given noise is the
noise used (and only where the sampler uses noise), runs are bitwise repeatable, the schedules are
the published formula, and the pipelines do what the harness's docstring says (CFG order, the
audio-to-audio mix, the inpainting conditioning, trimming). Not parity with JAX."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch reference needs CPU torch (make setup-test installs it)")
diffusers = pytest.importorskip("diffusers", reason="the SA3 reference is diffusers' (requirements-test.txt)")
if not hasattr(diffusers, "StableAudio3Pipeline"):
  pytest.skip(f"diffusers {diffusers.__version__} has no Stable Audio 3 (0.42.1 has)", allow_module_level=True)

from tests import sa3_reference as R  # noqa: E402

PROMPTS = ["Piano solo", "soft guitar, drums"]
DURATION = 2.0  # 8 latent frames at 64 Hz, hop 16


def noise(ref, batch, duration, steps, seed):
  rng = np.random.default_rng(seed)
  shape = R.latent_shape(ref, batch, duration)
  return rng.standard_normal(shape).astype(np.float32), rng.standard_normal((steps, *shape)).astype(np.float32)


def design_schedule(steps, sigma_max=1.0, logsnr_min=-6.2, logsnr_max=2.0):
  """DESIGN.md section 11, in float64: sigmoid of the log-SNR grid, start forced, last dropped, 0 appended."""
  t = np.linspace(sigma_max, 0.0, steps + 1)
  sigmas = 1.0 / (1.0 + np.exp(logsnr_max - t * (logsnr_max - logsnr_min)))  # sigmoid(-logsnr)
  sigmas[0] = sigma_max
  return np.concatenate([sigmas[:-1], [0.0]])


def random_audio(ref, batch, duration, seed):
  samples = int(duration * ref.sampling_rate)
  return np.random.default_rng(seed).uniform(-0.5, 0.5, (batch, 2, samples)).astype(np.float32)


@pytest.fixture(scope="module")
def sa3(tmp_path_factory):
  return R.build_sa3_reference(tmp_path_factory.mktemp("sa3"))


def test_saved_folder_is_the_diffusers_layout(sa3):
  root = sa3.diffusers_dir
  index = json.loads((root / "model_index.json").read_text())
  assert index["_class_name"] == "StableAudio3Pipeline"
  assert {k: v[1] for k, v in index.items() if not k.startswith("_")} == {
      "vae": "AutoencoderSAME", "text_encoder": "T5GemmaEncoderModel", "tokenizer": "GemmaTokenizer",
      "duration_embedder": "StableAudio3DurationEmbedder", "transformer": "StableAudio3DiTModel",
      "scheduler": "FlowMatchEulerDiscreteScheduler"}
  for sub in ("transformer", "vae", "text_encoder", "tokenizer", "duration_embedder", "scheduler"):
    assert (root / sub).is_dir(), sub
  scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
  assert (scheduler["num_train_timesteps"], scheduler["shift"], scheduler["stochastic_sampling"]) == (1, 1.0, True)
  tokenizer = json.loads((root / "tokenizer" / "tokenizer_config.json").read_text())
  assert tokenizer["padding_side"] == "left"
  # the couplings
  dit, vae = sa3.transformer.config, sa3.vae.config
  assert vae.latent_dim == dit.io_channels and dit.local_add_cond_dim == dit.io_channels + 1
  assert (dit.cond_token_dim == dit.global_cond_dim == sa3.text_encoder.config.encoder.hidden_size
          == sa3.duration_embedder.config.output_dim)
  assert sa3.text_encoder.config.encoder.layer_types == ["sliding_attention", "full_attention"]


def test_every_weight_is_random_and_formula_buffers_keep_their_formula(sa3):
  for component in ("transformer", "vae", "text_encoder", "duration_embedder"):
    module = getattr(sa3, component)
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
      if not tensor.is_floating_point() or name.rsplit(".", 1)[-1] in R.FORMULA_BUFFERS:
        continue
      values = tensor.detach().flatten()
      if values.numel() > 1:
        assert float(values.std()) > 0, f"{component}.{name} is constant"
      assert not bool(torch.isin(values, torch.tensor([0.0, 1.0, 4.0])).all()), f"{component}.{name} is at its init"
  # the ones diffusers zero-initialises
  dit = sa3.transformer
  for tensor in (dit.preprocess_conv.weight, dit.postprocess_conv.weight, dit.prompt_padding_embedding,
                 dit.transformer_blocks[0].to_local_embed[-1].weight, sa3.vae.bottleneck.bias,
                 sa3.vae.encoder.blocks[0].transformers[0].attn.to_out.weight):
    assert float(tensor.detach().abs().min()) > 0
  assert float(sa3.vae.bottleneck.running_std) != 1.0
  # formula buffers: the DiT's rotary inv_freq (saved in the checkpoint) and the duration freqs
  d = dit.config.embed_dim // dit.config.num_heads // 2
  np.testing.assert_allclose(dit.rotary_pos_emb.inv_freq.numpy(), 1.0 / 10000 ** (np.arange(0, d, 2) / d), rtol=1e-6)
  cfg = sa3.duration_embedder.config
  np.testing.assert_allclose(sa3.duration_embedder.freqs.numpy(),
                             np.geomspace(cfg.min_freq, cfg.max_freq, cfg.fourier_dim // 2), rtol=1e-5)


def test_saved_folder_loads_back_and_reproduces_the_output(sa3):
  loaded = diffusers.StableAudio3Pipeline.from_pretrained(sa3.diffusers_dir)
  for component in ("transformer", "vae", "text_encoder", "duration_embedder"):
    mine, theirs = getattr(sa3, component).state_dict(), getattr(loaded, component).state_dict()
    assert mine.keys() == theirs.keys(), component
    for key in mine:
      assert torch.equal(mine[key], theirs[key]), f"{component}.{key}"
  latents, step_noise = noise(sa3, 2, DURATION, 8, seed=1)
  a = R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=step_noise)
  b = R.text_to_audio(R.SA3Reference(loaded, sa3.diffusers_dir), PROMPTS, DURATION, 8, latents=latents,
                      step_noise=step_noise)
  np.testing.assert_array_equal(a.latents, b.latents)
  np.testing.assert_array_equal(a.audio, b.audio)


def test_ping_pong_uses_the_given_step_noise(sa3):
  from diffusers.schedulers import scheduling_flow_match_euler_discrete as scheduler_module

  original = scheduler_module.randn_tensor
  latents, step_noise = noise(sa3, 2, DURATION, 8, seed=2)
  run = R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=step_noise)
  assert scheduler_module.randn_tensor is original  # the patch is undone
  assert run.noise_draws == 8
  np.testing.assert_array_equal(run.dit_inputs[0], latents)  # the starting latents, unscaled
  # step 0 by hand: x0 = x - sigma v, x <- (1 - sigma_next) x0 + sigma_next * noise[0]
  s0, s1 = run.sigmas[:2]
  x0 = run.dit_inputs[0].astype(np.float64) - s0 * run.dit_outputs[0]
  np.testing.assert_allclose(run.dit_inputs[1], (1 - s1) * x0 + s1 * step_noise[0], atol=1e-5)
  # the last step: the final latents are x0 there (sigma_next = 0)
  np.testing.assert_allclose(run.latents, run.dit_inputs[-1] - run.sigmas[-2] * run.dit_outputs[-1], atol=1e-5)

  changed = step_noise.copy()
  changed[3] += 1.0
  other = R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=changed)
  assert not np.allclose(other.latents, run.latents)
  np.testing.assert_array_equal(other.dit_inputs[:4], run.dit_inputs[:4])  # noise 3 enters at step 4
  # the last draw is multiplied by sigma_next = 0: drawn, but without effect
  last = step_noise.copy()
  last[-1] += 1.0
  np.testing.assert_array_equal(R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents,
                                                step_noise=last).latents, run.latents)

  with pytest.raises(RuntimeError, match="no step_noise"):
    R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents)
  with pytest.raises(ValueError, match="shape"):
    R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=step_noise[:, :1])


def test_euler_with_cfg_ignores_step_noise(sa3):
  latents, step_noise = noise(sa3, 2, DURATION, 6, seed=3)
  run = R.text_to_audio(sa3, PROMPTS, DURATION, 6, 3.0, latents=latents, stochastic_sampling=False)
  assert run.noise_draws == 0
  with_noise = R.text_to_audio(sa3, PROMPTS, DURATION, 6, 3.0, latents=latents, step_noise=step_noise,
                               stochastic_sampling=False)
  np.testing.assert_array_equal(with_noise.latents, run.latents)
  np.testing.assert_array_equal(with_noise.audio, run.audio)
  assert sa3.scheduler.config.stochastic_sampling  # the saved scheduler is untouched
  # CFG: the DiT sees [uncond, cond], the uncond branch is the empty prompt's encoding
  assert run.dit_inputs.shape == (6, 4, *latents.shape[1:])
  np.testing.assert_array_equal(run.dit_inputs[0], np.concatenate([latents, latents]))
  uncond, uncond_mask, glob = R.conditioning(sa3, ["", ""], DURATION)
  cond, cond_mask, _ = R.conditioning(sa3, PROMPTS, DURATION)
  np.testing.assert_allclose(run.conditioning["encoder_hidden_states"], np.concatenate([uncond, cond]), atol=1e-6)
  np.testing.assert_array_equal(run.conditioning["encoder_attention_mask"], np.concatenate([uncond_mask, cond_mask]))
  np.testing.assert_allclose(run.conditioning["global_hidden_states"], np.concatenate([glob, glob]), atol=1e-6)
  # one Euler step with the guided velocity
  v_uncond, v_text = run.dit_outputs[0][:2], run.dit_outputs[0][2:]
  guided = v_uncond + 3.0 * (v_text - v_uncond)
  np.testing.assert_allclose(run.dit_inputs[1][:2], latents + (run.sigmas[1] - run.sigmas[0]) * guided, atol=1e-5)
  # a negative prompt replaces the empty one
  negative = R.text_to_audio(sa3, PROMPTS, DURATION, 6, 3.0, "drums", latents=latents, stochastic_sampling=False)
  np.testing.assert_allclose(negative.conditioning["encoder_hidden_states"][:2],
                             R.conditioning(sa3, ["drums", "drums"], DURATION)[0], atol=1e-6)
  assert not np.allclose(negative.latents, run.latents)


def test_runs_are_bitwise_repeatable(sa3):
  latents, step_noise = noise(sa3, 2, DURATION, 8, seed=4)
  a = R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=step_noise)
  b = R.text_to_audio(sa3, PROMPTS, DURATION, 8, latents=latents, step_noise=step_noise)
  for field in ("latents", "audio", "dit_inputs", "dit_outputs"):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
  assert a.sigmas == b.sigmas and a.timesteps == b.timesteps
  audio = random_audio(sa3, 1, DURATION, seed=5)
  start, step_noise = noise(sa3, 1, DURATION, 8, seed=6)
  runs = (lambda: R.audio_to_audio(sa3, audio, "Piano solo", 0.6, 8, latents=start, step_noise=step_noise),
          lambda: R.inpaint(sa3, audio, "Piano solo", 0.5, 1.25, 8, latents=start, step_noise=step_noise))
  for run in runs:
    c, d = run(), run()
    np.testing.assert_array_equal(c.latents, d.latents)
    np.testing.assert_array_equal(c.audio, d.audio)


def test_text_to_audio_schedule_is_the_design_formula(sa3):
  latents, step_noise = noise(sa3, 1, DURATION, 8, seed=7)
  run = R.text_to_audio(sa3, "Piano solo", DURATION, 8, latents=latents, step_noise=step_noise)
  assert len(run.sigmas) == 9 and run.sigmas[0] == 1.0 and run.sigmas[-1] == 0.0
  np.testing.assert_allclose(run.sigmas, design_schedule(8), atol=1e-6)
  assert run.timesteps == run.sigmas[:-1]  # the DiT's timestep is sigma itself
  # Euler (and its default 100 steps is the base model's) uses the same formula
  euler = R.text_to_audio(sa3, "Piano solo", DURATION, 5, latents=latents, stochastic_sampling=False)
  np.testing.assert_allclose(euler.sigmas, design_schedule(5), atol=1e-6)


def test_audio_to_audio_starts_at_init_noise_level(sa3):
  s = 0.5
  audio = random_audio(sa3, 1, DURATION, seed=8)
  start, step_noise = noise(sa3, 1, DURATION, 8, seed=9)
  run = R.audio_to_audio(sa3, audio, "Piano solo", s, 8, latents=start, step_noise=step_noise)
  assert run.sigmas[0] == s and run.timesteps[0] == s
  np.testing.assert_allclose(run.sigmas, design_schedule(8, sigma_max=s), atol=1e-6)
  assert run.sigmas[1] > run.sigmas[0]  # not monotonic: the grid's second point is above the forced start
  with torch.no_grad():
    ref_latents = sa3.vae.encode(torch.from_numpy(audio)).latents.numpy()
  assert ref_latents.shape == start.shape
  np.testing.assert_allclose(run.dit_inputs[0], (1 - s) * ref_latents + s * start, atol=1e-6)
  # a shorter recording is zero-padded in latent space to the requested duration's length
  short = R.audio_to_audio(sa3, audio[..., :80], "Piano solo", s, 8, latents=start, step_noise=step_noise,
                           duration=DURATION)
  with torch.no_grad():
    short_latents = sa3.vae.encode(torch.from_numpy(audio[..., :80])).latents.numpy()  # 5 frames
  padded = np.concatenate([short_latents, np.zeros((1, start.shape[1], 3), np.float32)], axis=-1)
  np.testing.assert_allclose(short.dit_inputs[0], (1 - s) * padded + s * start, atol=1e-6)
  with pytest.raises(ValueError, match="no classifier-free guidance"):
    R.audio_to_audio(sa3, audio, "Piano solo", s, 8, 3.0, latents=start, step_noise=step_noise)


def test_inpaint_conditions_on_the_known_region_and_pastes_nothing_back(sa3):
  audio = random_audio(sa3, 1, DURATION, seed=10)
  start, step_noise = noise(sa3, 1, DURATION, 8, seed=11)
  run = R.inpaint(sa3, audio, "Piano solo", 0.6, 1.3, 8, latents=start, step_noise=step_noise)
  np.testing.assert_array_equal(run.dit_inputs[0], start)  # pure noise: no blend with the reference
  np.testing.assert_allclose(run.sigmas, design_schedule(8), atol=1e-6)
  # the mask in latent frames: 1 = keep; [int(0.6 * 64 / 16), int(1.3 * 64 / 16)) = [2, 5) generated
  mask = np.ones(8, np.float32)
  mask[int(0.6 * 64 / 16):int(1.3 * 64 / 16)] = 0
  with torch.no_grad():
    ref_latents = sa3.vae.encode(torch.from_numpy(audio)).latents.numpy()
  expected = np.concatenate([mask[None, None], ref_latents * mask], axis=1)
  np.testing.assert_array_equal(run.local_add_cond, expected)
  # nothing is pasted back: outside the mask the latents are not the reference's, at no step
  keep = mask == 1
  for x in list(run.dit_inputs) + [run.latents]:
    assert np.abs(x[..., keep] - ref_latents[..., keep]).max() > 0.1
  # but the reference is really conditioned on (to_local_embed is random, not zero)
  other = R.inpaint(sa3, random_audio(sa3, 1, DURATION, seed=12), "Piano solo", 0.6, 1.3, 8, latents=start,
                    step_noise=step_noise)
  assert not np.allclose(other.latents, run.latents)
  np.testing.assert_array_equal(other.dit_inputs[0], run.dit_inputs[0])
  with pytest.raises(ValueError, match="no classifier-free guidance"):
    R.inpaint(sa3, audio, "Piano solo", 0.6, 1.3, 8, 2.0, latents=start, step_noise=step_noise)


def test_text_and_duration_pieces(sa3):
  embeds, mask = R.encode_prompt(sa3, ["Piano solo", ""])
  ids = sa3.tokenizer(["Piano solo", ""], padding="max_length", max_length=R.TEXT_MAX_LENGTH).input_ids
  assert mask.shape == (2, R.TEXT_MAX_LENGTH) and mask.dtype == np.int64
  # left padding, <bos> first, no <eos>; the empty prompt is <bos> alone
  assert mask[1].tolist() == [0] * 11 + [1] and ids[1][-1] == 2
  first = int(np.argmax(mask[0]))
  assert mask[0, first:].all() and not mask[0, :first].any() and ids[0][first] == 2 and 1 not in ids[0]
  with torch.no_grad():
    direct = sa3.text_encoder(torch.tensor(ids), attention_mask=torch.from_numpy(mask))[0].numpy()
  np.testing.assert_array_equal(embeds, direct)
  # the duration embedding, computed independently (M 90-109) from the saved freqs buffer. The phase
  # t * freqs * 2 * pi is float32 in that order: in float64, or with freqs one ulp off, the result
  # differs by 1e-4 already at max_freq 100 (the real models use 10000).
  cfg = sa3.duration_embedder.config
  freqs = sa3.duration_embedder.freqs.numpy()
  linear = sa3.duration_embedder.linear
  for duration in (1.5, 20.0):  # 20 is clamped to max_val
    t = np.float32((min(duration, cfg.max_val) - cfg.min_val) / (cfg.max_val - cfg.min_val))
    phase = t * freqs * np.float32(2.0) * np.float32(math.pi)
    features = np.concatenate([np.cos(phase), np.sin(phase)]).astype(np.float64)
    expected = features @ linear.weight.detach().numpy().T.astype(np.float64) + linear.bias.detach().numpy()
    np.testing.assert_allclose(R.encode_duration(sa3, duration)[0], expected, atol=1e-5)
  context, context_mask, glob = R.conditioning(sa3, ["Piano solo", ""], 1.5)
  assert context.shape == (2, R.TEXT_MAX_LENGTH + 1, R.COND_DIM)
  np.testing.assert_array_equal(context[:, :-1], embeds)
  np.testing.assert_array_equal(context[:, -1], glob)
  np.testing.assert_array_equal(context_mask[:, -1], [1, 1])


def test_latent_length_and_trimming(sa3):
  duration = 1.9  # ceil(7.6) = 8 latent frames, int(121.6) = 121 samples
  assert R.latent_shape(sa3, 1, duration) == (1, R.LATENT_DIM, 8)
  latents, step_noise = noise(sa3, 1, duration, 3, seed=13)
  run = R.text_to_audio(sa3, "Piano solo", duration, 3, latents=latents, step_noise=step_noise)
  assert run.latents.shape == (1, R.LATENT_DIM, 8) and run.audio.shape == (1, 2, 121)
  with torch.no_grad():
    decoded = sa3.vae.decode(torch.from_numpy(run.latents)).sample.numpy()
  np.testing.assert_array_equal(run.audio, np.clip(decoded[..., :121], -1, 1))
  assert math.isfinite(float(np.abs(run.audio).max()))


@pytest.mark.parametrize("options", [dict(differential=False, memory_tokens=0, distilled=False),
                                     dict(differential=True, memory_tokens=2, vae_differential=False, seed=3)])
def test_other_builds(tmp_path, options):
  ref = R.build_sa3_reference(tmp_path, **options)
  assert ref.transformer.config.use_differential_attention == options["differential"]
  assert ref.transformer.config.num_memory_tokens == options["memory_tokens"]
  latents, step_noise = noise(ref, 1, 1.0, 3, seed=14)
  run = R.text_to_audio(ref, "Piano solo", 1.0, 3, 2.0, latents=latents, step_noise=step_noise)
  assert run.noise_draws == (0 if options.get("distilled") is False else 3)
  assert np.isfinite(run.latents).all() and run.audio.shape == (1, 2, 64)
  loaded = diffusers.StableAudio3Pipeline.from_pretrained(ref.diffusers_dir)
  assert loaded.scheduler.config.stochastic_sampling == options.get("distilled", True)
