"""PyTorch reference for Stable Audio 3 (diffusers 0.42.1, transformers 5.24; CPU torch, test-only).

`build_sa3_reference` writes a tiny random SA3 pipeline in the real diffusers folder layout
(`model_index.json` naming `StableAudio3Pipeline`; `transformer/`, `vae/`, `text_encoder/`,
`tokenizer/`, `duration_embedder/`, `scheduler/`). `text_to_audio`, `audio_to_audio` and `inpaint`
run diffusers' own `__call__` of `StableAudio3Pipeline`, `StableAudio3AudioToAudioPipeline` and
`StableAudio3InpaintPipeline` on arrays the caller gives (the starting latents and the per-step
noise), so a JAX implementation can be fed exactly the same numbers.

How the given noise gets in (the least invasive way that leaves every line of the pipelines and of
the scheduler running): the starting tensor is the pipelines' own `latents=` argument, and for the
duration of one call `diffusers.schedulers.scheduling_flow_match_euler_discrete.randn_tensor` (the
name `FlowMatchEulerDiscreteScheduler.step` calls, scheduler l.517) is replaced by a function that
returns `step_noise[i]` at its i-th call and checks the shape it was asked for. The `randn_tensor`
the three pipeline modules imported for themselves (used only when `latents` is None, l.354) is
replaced by one that raises, so no hidden random draw can happen. A forward pre-hook / hook on the
transformer records what the DiT received and returned at each call (timestep, input latents,
conditioning, `local_add_cond`, velocity); a `callback_on_step_end` records the final latents while
the pipeline still decodes, trims and clamps the audio itself (`output_type="np"`).

Facts for the JAX side. Line numbers: P = pipelines/stable_audio_3/pipeline_stable_audio_3.py,
A = ..._audio2audio.py, I = ..._inpaint.py, S = schedulers/scheduling_flow_match_euler_discrete.py,
D = models/transformers/transformer_stable_audio3.py, V = models/autoencoders/autoencoder_same.py,
M = pipelines/stable_audio_3/modeling_stable_audio_3.py (all under site-packages/diffusers).

Shared by the three pipelines
- Text (P 223-287, copied to A and I): `tokenizer(prompts, padding="max_length",
  max_length=min(tokenizer.model_max_length, 256), truncation=True)` (P 250-259), padding on the
  LEFT: transformers' `GemmaTokenizer.padding_side` is "left" and the pipeline does not override it
  (the tiny tokenizer here saves `"padding_side": "left"`). Whether `<bos>` / `<eos>` are added comes
  from the tokenizer files, not the pipeline; the tiny one adds `<bos>` only, as Gemma's do (not
  checked against T5Gemma's gated files), so the empty prompt is `[<bos>]` plus padding.
  `prompt_embeds = text_encoder(ids, attention_mask=mask)[0]` (P 275): the T5Gemma encoder's last
  hidden state after its final (1 + w) RMSNorm, no projection. T5Gemma's position ids are
  `arange(seq_len)` whatever the padding (transformers models/t5gemma/modeling_t5gemma.py,
  `T5GemmaEncoder.forward`): with left padding the first real token does not sit at position 0.
  The mask returned is the tokenizer's (1 = token, 0 = pad).
- Duration (P 289-311; M 90-109): `duration_embedder(tensor([duration] * B))`: clamp to
  [min_val, max_val], normalise to [0, 1], `cat(cos, sin)(2 pi t freqs)` with `freqs`
  log-spaced in [min_freq, max_freq] (a buffer holding that formula, not a learned weight, computed
  as `exp(linspace(0, 1, half) * (log max - log min) + log min)` in float32, M 80-85), then one Linear.
  The phase `t * freqs * 2 * pi` is float32 in that order; at the real max_freq 10000 it reaches
  ~6e4 rad, so a float64 or differently ordered computation differs by ~1e-3 rad: compute it in
  float32 the same way. The DiT's timestep features do the same with sigma (D 82-90; freqs
  recomputed on the fly, max_freq 10000). The same duration vector is used twice: as
  `global_hidden_states` (AdaLN) and appended as one extra context token after the text tokens,
  with mask 1 (`prepare_cross_attention`, P 313-333: `cat([prompt_embeds, duration_token], 1)`,
  P 330).
- The DiT (D 521-632) then replaces every position whose mask is 0 by the learned
  `prompt_padding_embedding` in the raw context space and attends to all positions without a mask
  (D 551-555); the timestep it receives is sigma itself (`num_train_timesteps=1`, S 376, the
  pipeline passes `t.expand(batch)`, P 589-596).
- Latent length (P 549-556, A 527-532, I 565-570): `L = ceil((duration + silence_padding_duration)
  * sampling_rate / hop)` with `hop = vae.downsampling_ratio = patch_size * prod(strides)`; output
  samples `int(duration * sampling_rate)` (note: `int`, i.e. floor, while L uses ceil).
- Schedule (`logsnr_sigma_schedule`, P 92-132): `t = torch.linspace(sigma_max, 0, N + 1)` in
  float32, `sigma = sigmoid(-(logsnr_max - t (logsnr_max - logsnr_min)))`, `sigma[0] = sigma_max`
  (forced), the last breakpoint dropped, the list passed as `set_timesteps(sigmas=...)`, which
  casts to float32 (S 349), applies `shift` (1.0: identity, S 357) and appends 0 (S 386). So
  `scheduler.sigmas` has N + 1 entries ending in 0 and `scheduler.timesteps == sigmas[:N]`.
  Defaults: logsnr_min -6.2, logsnr_max 2.0; N defaults to 8 when the scheduler's
  `stochastic_sampling` is true, else 100 (P 571).
- Scheduler step (S 432-532): the sample is upcast to float32 (S 493); with
  `stochastic_sampling=True` ("ping-pong"): `x0 = x - sigma v; x = (1 - sigma_next) x0 +
  sigma_next * noise` with a fresh standard normal `noise` drawn at EVERY step, the last one
  included although `sigma_next = 0` there makes it irrelevant (S 515-518); with
  `stochastic_sampling=False` (Euler): `x = x + (sigma_next - sigma) v` (S 520), no draw. The step
  index is found from the first timestep (`index_for_timestep` takes the second match when a value
  occurs twice, S 393-422) and then just counts.
- Decode (P 622-623, A 586-587, I 646-647): `vae.decode(latents).sample[:, :, :int(duration *
  sr)].clamp(-1, 1)`. SAME decode = `latents * running_std` (V 495; no bias undone), decoder, unpatch.
  No scaling of latents anywhere else (flow matching: the initial latents are used as given, P 356).

StableAudio3Pipeline (text to audio, P 400-632)
1. encode prompts (P 507); 2. duration embedding and context token (P 516-519); 3. if
   `guidance_scale > 1` (P 217): encode `negative_prompt`, or `[""] * B` when none is given (the
   empty prompt, i.e. `[<bos>]` plus padding, not zeros), with the same duration token (P 521-539);
4. latents = the given `latents` as they are (P 559-567, 354-356); 5. sigmas (P 571-573);
6. each step (P 578-603): with CFG the DiT sees `cat([latents, latents])`, context
   `cat([negative, positive])` (unconditional FIRST), masks likewise, the duration vector twice;
   `v = v_uncond + g (v_text - v_uncond)` (P 600); then `scheduler.step` (P 603);
7. decode, trim, clamp (P 622-623).

StableAudio3AudioToAudioPipeline (A 426-596). It has NO guidance at all (no `guidance_scale` or
`negative_prompt` argument); init_noise_level must lie in (0, 1] (A 496); `duration` defaults to
10 s in diffusers whatever the audio's length (`audio_to_audio` and `inpaint` here default it to the
audio's length instead).
1-2. text and duration as above; 3. `ref = vae.encode(audio).latents` (A 395-423, 535), zero-padded
   on the right or cropped to L (A 416-421); 4. `noise` = the pipeline's `latents=` argument
   (A 540-548); `x = (1 - s) ref + s noise` with s = init_noise_level (A 549);
5. sigmas = `logsnr_sigma_schedule(N, ..., sigma_max=s)` (A 554): the grid runs from t = s to 0 but
   the log-SNR map still spans the full [logsnr_min, logsnr_max], and only sigma[0] is forced to s,
   so sigma[1] = sigmoid(-(logsnr_max - s (N - 1) / N (logsnr_max - logsnr_min))) is usually ABOVE
   s (0.5 -> 0.83 at N = 8): the schedule first rises, then falls; 6. plain conditional steps
   (A 559-570); 7. decode, trim, clamp.

StableAudio3InpaintPipeline (I 457-656). NO guidance either.
1-2. text and duration as above; 3. mask in latent frames, 1 = keep, 0 = generate:
   `ones(B, 1, L)`, then for each (start, end): `mask[:, :, int(start * sr / hop):min(int(end * sr /
   hop), L)] = 0` (I 579-583; both ends floored); or a given `mask` (B, 1, L_any), resized with
   nearest interpolation (I 437-439); 4. `ref = vae.encode(audio).latents` (I 588; no padding here),
   then padded/cropped to L (I 441-447); 5. `local_add_cond = cat([mask, ref * mask], 1)`, shape
   (B, 1 + latent_dim, L) (I 449-453, 591-594); 6. the starting latents are pure noise, the
   `latents=` argument (I 598-606, 616); 7. plain conditional steps, the same `local_add_cond` passed
   to every DiT call (I 618-630); 8. decode, trim, clamp.
   The known region is ONLY conditioned, never pasted back: there is no blending of `ref` into the
   latents at any step or at the end, so the pipeline guarantees nothing about the output outside
   the mask (a trained model reproduces it approximately; these random weights do not).
   In the DiT, `to_local_embed(local_add_cond^T)` is added to the audio positions (not the memory
   tokens) of the residual stream after cross-attention and before the feed-forward of every block
   (D 389-393); `local_add_cond` requires DiT `patch_size == 1` (D 578-584).

Tiny configs (couplings): SAME `latent_dim` = DiT `io_channels`; DiT `cond_token_dim` = T5Gemma
`hidden_size` = duration `output_dim` = DiT `global_cond_dim`; `local_add_cond_dim` = io_channels + 1.
Every parameter and every running statistic is random (fixed seed), including those diffusers
initialises to zero (pre/post convs, `to_local_embed[-1]`, `prompt_padding_embedding`, SAME's
zero-initialised `to_out`/`proj_out`, the SoftNorm `bias` and `running_std`). The buffers that hold a
formula rather than a learned value keep it: the DiT's `rotary_pos_emb.inv_freq` (saved in the
checkpoint), the duration embedder's `freqs` (saved), SAME's and T5Gemma's rotary `inv_freq` (not
saved).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from diffusers import (AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3AudioToAudioPipeline,
                       StableAudio3DiTModel, StableAudio3InpaintPipeline, StableAudio3Pipeline)
from diffusers.pipelines.stable_audio_3 import pipeline_stable_audio_3 as _t2a_module
from diffusers.pipelines.stable_audio_3 import pipeline_stable_audio_3_audio2audio as _a2a_module
from diffusers.pipelines.stable_audio_3 import pipeline_stable_audio_3_inpaint as _inpaint_module
from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
from diffusers.schedulers import scheduling_flow_match_euler_discrete as _scheduler_module
from transformers import GemmaTokenizerFast, T5GemmaConfig, T5GemmaEncoderModel
from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

# ----------------------------------------------------------------------------- tiny configs

SAMPLING_RATE = 64  # hop 16 -> 4 latent frames per second
TEXT_MAX_LENGTH = 12
COND_DIM = 16  # T5Gemma hidden = DiT cond_token_dim = global_cond_dim = duration output_dim
LATENT_DIM = 8  # SAME latent_dim = DiT io_channels

SAME_TINY = dict(audio_channels=2, patch_size=4, encoder_channels=8, encoder_c_mults=[2, 3], encoder_strides=[2, 2],
                 encoder_transformer_depths=[2, 2], latent_dim=LATENT_DIM, dim_heads=8, ff_mult=2, sliding_window=1,
                 # per level; 2 with depth 2 makes exactly the last layer of that level sinusoidal (the
                 # reference's off-by-one: layer i is sinusoidal when depth - i < n)
                 encoder_sinusoidal_blocks=[0, 2], decoder_sinusoidal_blocks=[2, 0], sampling_rate=SAMPLING_RATE)
DIT_TINY = dict(io_channels=LATENT_DIM, patch_size=1, embed_dim=32, depth=2, num_heads=2, cond_token_dim=COND_DIM,
                global_cond_dim=COND_DIM, local_add_cond_dim=LATENT_DIM + 1, timestep_features_dim=16, ff_mult=2.0)
# One sliding and one full layer (window 3 < 12 tokens, so the window matters), GQA 4 query / 2 kv
# heads, query_pre_attn_scalar != head_dim, and a soft cap low enough to bite on random weights.
T5GEMMA_TINY = dict(hidden_size=COND_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=12, sliding_window=3,
                    layer_types=["sliding_attention", "full_attention"], attn_logit_softcapping=2.0,
                    final_logit_softcapping=30.0, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=64,
                    rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2)
DURATION_TINY = dict(output_dim=COND_DIM, fourier_dim=16, min_val=0.0, max_val=8.0, min_freq=0.5, max_freq=100.0)
# As the published SA3 scheduler config: sigma is the DiT's timestep, no shift; stochastic_sampling
# true for the distilled (ping-pong) checkpoints, false for the -base (Euler) ones.
SCHEDULER_TINY = dict(num_train_timesteps=1, shift=1.0, use_dynamic_shifting=False)

# Buffers that hold a formula, not a learned value (see the module docstring).
FORMULA_BUFFERS = ("inv_freq", "original_inv_freq", "freqs")


def build_tiny_gemma_tokenizer(max_length: int = TEXT_MAX_LENGTH) -> GemmaTokenizerFast:
  """A Gemma tokenizer (BPE with byte fallback, `<pad>`=0 `<eos>`=1 `<bos>`=2 `<unk>`=3 `<mask>`=4,
  then the 256 byte tokens `<0x00>`..`<0xFF>`, then characters and a few merges), built by hand
  without downloading: `GemmaTokenizerFast(vocab=, merges=)` builds the `tokenizers` object exactly as
  transformers builds Gemma's (normalizer " " -> "▁", split on spaces, ByteFallback decoder);
  `add_bos_token=True`, `add_eos_token=False` and left padding as Gemma's."""
  vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"])}
  for b in range(256):
    vocab[f"<0x{b:02X}>"] = len(vocab)
  for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789▁,.-":
    vocab[c] = len(vocab)
  merges = []
  for word in ("▁piano", "▁solo", "Piano", "▁guitar", "▁soft", "▁drums", "▁bass"):
    piece = word[0]
    for c in word[1:]:
      merges.append((piece, c))
      piece += c
      vocab.setdefault(piece, len(vocab))
  return GemmaTokenizerFast(vocab=vocab, merges=merges, model_max_length=max_length, add_bos_token=True,
                            add_eos_token=False, padding_side="left")


def randomize_sa3_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
  """Every parameter and float buffer random except the formula buffers (FORMULA_BUFFERS):
  scales near 1 where a value multiplies (RMSNorm / DyT gamma, SoftNorm scale), T5Gemma's (1 + w)
  norm weights near 0, weight-norm magnitudes and running_std positive, matrices with fan-in
  scaling, everything diffusers zero-initialises included."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
      leaf = name.rsplit(".", 1)[-1]
      if not tensor.is_floating_point() or leaf in FORMULA_BUFFERS:
        continue
      noise = torch.randn(tensor.shape, generator=gen)
      if leaf == "weight_g":  # weight-norm magnitude per output channel (small: keeps SAME's audio mostly in [-1, 1])
        value = 0.27 + 0.27 * noise.abs()
      elif leaf == "running_std":
        value = 0.5 + 0.5 * noise.abs()
      elif leaf == "alpha":  # DynamicTanh
        value = 1.0 + 0.3 * noise
      elif leaf in ("gamma", "scale"):  # RMSNorm / DyT gains, SoftNorm scale
        value = 1.0 + 0.1 * noise
      elif leaf == "prompt_padding_embedding":  # stands in for a normalised text embedding
        value = noise
      elif leaf == "to_scale_shift_gate":
        value = 0.3 * noise
      elif leaf in ("new_tokens", "memory_tokens"):
        value = 0.5 * noise
      elif "norm" in name and leaf == "weight":  # T5Gemma RMSNorm: x * (1 + weight)
        value = 0.1 * noise
      elif tensor.ndim >= 2:
        value = noise * int(np.prod(tensor.shape[1:])) ** -0.5
      else:
        value = 0.1 * noise
      tensor.copy_(value)
  return module.eval()


@dataclasses.dataclass
class SA3Reference:
  """The tiny torch components, the pipeline built from them, and the folder it was saved to."""

  pipeline: StableAudio3Pipeline
  diffusers_dir: Path

  @property
  def transformer(self) -> StableAudio3DiTModel:
    return self.pipeline.transformer

  @property
  def vae(self) -> AutoencoderSAME:
    return self.pipeline.vae

  @property
  def text_encoder(self) -> T5GemmaEncoderModel:
    return self.pipeline.text_encoder

  @property
  def tokenizer(self) -> GemmaTokenizerFast:
    return self.pipeline.tokenizer

  @property
  def duration_embedder(self) -> StableAudio3DurationEmbedder:
    return self.pipeline.duration_embedder

  @property
  def scheduler(self) -> FlowMatchEulerDiscreteScheduler:
    return self.pipeline.scheduler

  @property
  def sampling_rate(self) -> int:
    return int(self.vae.config.sampling_rate)

  @property
  def hop(self) -> int:
    return int(self.vae.downsampling_ratio)


def build_sa3_reference(root: Path, *, differential: bool = True, memory_tokens: int = 4, distilled: bool = True,
                        seed: int = 0, vae_differential: bool | None = None,
                        text_max_length: int = TEXT_MAX_LENGTH) -> SA3Reference:
  """A tiny random SA3 pipeline saved with `save_pretrained` to `root / "diffusers"`.

  differential: the DiT's differential attention (also SAME's unless vae_differential says otherwise);
  memory_tokens: the DiT's `num_memory_tokens`; distilled: the scheduler's `stochastic_sampling`
  (ping-pong, 8 steps by default) or not (Euler, 100)."""
  vae_differential = differential if vae_differential is None else vae_differential
  torch.manual_seed(seed)
  transformer = randomize_sa3_(StableAudio3DiTModel(**DIT_TINY, num_memory_tokens=memory_tokens,
                                                    use_differential_attention=differential), seed + 1)
  vae = randomize_sa3_(AutoencoderSAME(**SAME_TINY, use_differential_attention=vae_differential), seed + 2)
  tokenizer = build_tiny_gemma_tokenizer(text_max_length)
  module = T5GemmaModuleConfig(vocab_size=len(tokenizer), **T5GEMMA_TINY).to_dict()
  text_encoder = randomize_sa3_(T5GemmaEncoderModel(T5GemmaConfig(
      encoder=module, decoder=module, is_encoder_decoder=False, vocab_size=len(tokenizer))), seed + 3)
  duration_embedder = randomize_sa3_(StableAudio3DurationEmbedder(**DURATION_TINY), seed + 4)
  scheduler = FlowMatchEulerDiscreteScheduler(**SCHEDULER_TINY, stochastic_sampling=distilled)
  pipeline = StableAudio3Pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                  duration_embedder=duration_embedder, transformer=transformer, scheduler=scheduler)
  pipeline.set_progress_bar_config(disable=True)
  out = Path(root) / "diffusers"
  pipeline.save_pretrained(out)
  return SA3Reference(pipeline, out)


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass
class SA3Run:
  """One pipeline call. Arrays are float32 numpy.

  latents       (B, C, L) final latents (what the pipeline decodes);
  audio         (B, channels, int(duration * sr)) decoded, trimmed, clamped, as the pipeline returns it;
  sigmas        the scheduler's full schedule after `set_timesteps`: N + 1 values ending in 0;
  timesteps     the timestep the transformer received at each call (one value per step; the hook
                checks every batch entry got the same one);
  dit_inputs    (N, B_dit, C, L) the latents the DiT received (B_dit = 2B with CFG: uncond first);
  dit_outputs   (N, B_dit, C, L) the DiT's velocity before any CFG combination;
  conditioning  what the DiT received at its first call: encoder_hidden_states (B_dit, T_text + 1, D),
                encoder_attention_mask (B_dit, T_text + 1), global_hidden_states (B_dit, D);
  local_add_cond (B, 1 + C, L) for inpainting (the same at every call, checked), else None;
  noise_draws   how many step noises the scheduler drew (N for ping-pong, 0 for Euler)."""

  latents: np.ndarray
  audio: np.ndarray
  sigmas: list[float]
  timesteps: list[float]
  dit_inputs: np.ndarray
  dit_outputs: np.ndarray
  conditioning: dict[str, np.ndarray]
  local_add_cond: np.ndarray | None
  noise_draws: int


def latent_length(ref: SA3Reference, duration: float, silence_padding_duration: float = 0.0) -> int:
  """The pipelines' latent length (P 549-553)."""
  return int(math.ceil((duration + silence_padding_duration) * ref.sampling_rate / ref.hop))


def latent_shape(ref: SA3Reference, batch: int, duration: float,
                 silence_padding_duration: float = 0.0) -> tuple[int, int, int]:
  return (batch, int(ref.vae.config.latent_dim), latent_length(ref, duration, silence_padding_duration))


def _pipeline(ref: SA3Reference, cls, stochastic_sampling: bool | None):
  scheduler = ref.scheduler
  if stochastic_sampling is not None and bool(stochastic_sampling) != bool(scheduler.config.stochastic_sampling):
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, stochastic_sampling=stochastic_sampling)
  else:  # a fresh copy: set_timesteps mutates the scheduler
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
  p = ref.pipeline
  pipe = cls(vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, duration_embedder=p.duration_embedder,
             transformer=p.transformer, scheduler=scheduler)
  pipe.set_progress_bar_config(disable=True)
  return pipe


@contextlib.contextmanager
def given_noise(step_noise):
  """Within the block the scheduler's i-th noise draw returns `step_noise[i]` (shape-checked); any
  draw by a pipeline itself raises. Yields the list of draws made (their shapes)."""
  draws: list[tuple[int, ...]] = []

  def scheduler_randn(shape, generator=None, device=None, dtype=None, layout=None):
    i = len(draws)
    draws.append(tuple(shape))
    if step_noise is None:
      raise RuntimeError(f"the scheduler drew noise at step {i} (stochastic sampling) but no step_noise was given")
    if i >= len(step_noise):
      raise RuntimeError(f"the scheduler drew noise {i + 1} times; step_noise holds {len(step_noise)}")
    noise = np.asarray(step_noise[i], np.float32)
    if noise.shape != tuple(shape):
      raise ValueError(f"step_noise[{i}] has shape {noise.shape}; the scheduler asked for {tuple(shape)}")
    return torch.from_numpy(noise.copy()).to(device=device, dtype=dtype)

  def forbidden(*args, **kwargs):
    raise RuntimeError("the pipeline drew its own random latents: pass latents=")

  with contextlib.ExitStack() as stack:
    stack.enter_context(mock.patch.object(_scheduler_module, "randn_tensor", scheduler_randn))
    for module in (_t2a_module, _a2a_module, _inpaint_module):
      stack.enter_context(mock.patch.object(module, "randn_tensor", forbidden))
    yield draws


def _run(ref: SA3Reference, cls, call_kwargs: dict, latents: np.ndarray, step_noise, stochastic_sampling) -> SA3Run:
  pipe = _pipeline(ref, cls, stochastic_sampling)
  record: dict[str, list] = {"t": [], "x": [], "v": [], "cond": [], "local": []}

  def pre_hook(module, args, kwargs):
    names = ("hidden_states", "timestep", "encoder_hidden_states", "global_hidden_states", "encoder_attention_mask",
             "local_add_cond")
    given = dict(zip(names, args))
    given.update({k: v for k, v in kwargs.items() if k in names})
    t = given["timestep"].detach().float()
    assert bool((t == t[0]).all()), "the batch received different timesteps"
    record["t"].append(float(t[0]))
    record["x"].append(given["hidden_states"].detach().float().numpy().copy())
    if not record["cond"]:
      record["cond"].append({k: given[k].detach().numpy().copy() for k in names[2:5] if given.get(k) is not None})
    local = given.get("local_add_cond")
    if local is not None:
      record["local"].append(local.detach().float().numpy().copy())

  def hook(module, args, kwargs, output):
    v = output[0] if isinstance(output, tuple) else output.sample
    record["v"].append(v.detach().float().numpy().copy())

  final: dict[str, np.ndarray] = {}

  def on_step_end(pipeline, i, t, callback_kwargs):
    final["latents"] = callback_kwargs["latents"].detach().float().numpy().copy()
    return {}

  handles = [pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True),
             pipe.transformer.register_forward_hook(hook, with_kwargs=True)]
  try:
    with given_noise(step_noise) as draws:
      out = pipe(**call_kwargs, latents=torch.from_numpy(np.asarray(latents, np.float32).copy()), output_type="np",
                 callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["latents"])
  finally:
    for h in handles:
      h.remove()
  local = None
  if record["local"]:
    local = record["local"][0]
    assert all(np.array_equal(local, other) for other in record["local"]), "local_add_cond changed between steps"
  return SA3Run(latents=final["latents"], audio=np.asarray(out.audios, np.float32),
                sigmas=[float(s) for s in pipe.scheduler.sigmas], timesteps=record["t"],
                dit_inputs=np.stack(record["x"]), dit_outputs=np.stack(record["v"]), conditioning=record["cond"][0],
                local_add_cond=local, noise_draws=len(draws))


def _prompts(prompts) -> list[str]:
  return [prompts] if isinstance(prompts, str) else list(prompts)


def _no_guidance(name: str, guidance: float) -> None:
  if guidance != 1.0:
    raise ValueError(f"{name} has no classifier-free guidance (no guidance_scale argument); guidance must be 1")


def text_to_audio(ref: SA3Reference, prompts, duration: float, steps: int, guidance: float = 1.0,
                  negative_prompt=None, *, latents: np.ndarray, step_noise: np.ndarray | None = None,
                  stochastic_sampling: bool | None = None, logsnr_min: float = -6.2, logsnr_max: float = 2.0,
                  silence_padding_duration: float = 0.0) -> SA3Run:
  """`StableAudio3Pipeline.__call__` with the given starting `latents` (B, C, L) (see `latent_shape`)
  and per-step noise `step_noise` (steps, B, C, L) (needed for ping-pong, unused by Euler).
  stochastic_sampling None keeps the saved scheduler's; True/False rebuilds it with `from_config`."""
  kwargs = dict(prompt=_prompts(prompts), duration=duration, num_inference_steps=steps, guidance_scale=guidance,
                negative_prompt=negative_prompt, logsnr_min=logsnr_min, logsnr_max=logsnr_max,
                silence_padding_duration=silence_padding_duration)
  return _run(ref, StableAudio3Pipeline, kwargs, latents, step_noise, stochastic_sampling)


def audio_to_audio(ref: SA3Reference, audio: np.ndarray, prompts, init_noise_level: float, steps: int,
                   guidance: float = 1.0, *, latents: np.ndarray, step_noise: np.ndarray | None = None,
                   duration: float | None = None, stochastic_sampling: bool | None = None,
                   logsnr_min: float = -6.2, logsnr_max: float = 2.0) -> SA3Run:
  """`StableAudio3AudioToAudioPipeline.__call__`. audio (B, channels, samples) at the VAE's rate;
  `latents` (B, C, L) is the NOISE the pipeline mixes with the encoded audio, `(1 - s) ref + s latents`
  (its own `latents=` argument); duration defaults to samples / sampling_rate. The pipeline has no
  CFG: guidance must be 1."""
  _no_guidance("StableAudio3AudioToAudioPipeline", guidance)
  audio = np.asarray(audio, np.float32)
  duration = audio.shape[-1] / ref.sampling_rate if duration is None else duration
  kwargs = dict(prompt=_prompts(prompts), duration=duration, audio=torch.from_numpy(audio.copy()),
                init_noise_level=init_noise_level, num_inference_steps=steps, logsnr_min=logsnr_min,
                logsnr_max=logsnr_max)
  return _run(ref, StableAudio3AudioToAudioPipeline, kwargs, latents, step_noise, stochastic_sampling)


def inpaint(ref: SA3Reference, audio: np.ndarray, prompts, mask_start_seconds, mask_end_seconds, steps: int,
            guidance: float = 1.0, *, latents: np.ndarray, step_noise: np.ndarray | None = None,
            duration: float | None = None, stochastic_sampling: bool | None = None, logsnr_min: float = -6.2,
            logsnr_max: float = 2.0) -> SA3Run:
  """`StableAudio3InpaintPipeline.__call__` with `mask_start_seconds` / `mask_end_seconds` (floats or
  lists). `latents` (B, C, L) is the starting noise. The pipeline has no CFG: guidance must be 1."""
  _no_guidance("StableAudio3InpaintPipeline", guidance)
  audio = np.asarray(audio, np.float32)
  duration = audio.shape[-1] / ref.sampling_rate if duration is None else duration
  kwargs = dict(prompt=_prompts(prompts), duration=duration, audio=torch.from_numpy(audio.copy()),
                mask_start_seconds=mask_start_seconds, mask_end_seconds=mask_end_seconds, num_inference_steps=steps,
                logsnr_min=logsnr_min, logsnr_max=logsnr_max)
  return _run(ref, StableAudio3InpaintPipeline, kwargs, latents, step_noise, stochastic_sampling)


# ----------------------------------------------------------------------------- pieces


@torch.no_grad()
def encode_prompt(ref: SA3Reference, prompts) -> tuple[np.ndarray, np.ndarray]:
  """(prompt_embeds (B, max_length, D) float32, mask (B, max_length) int64) as the pipeline computes
  them, before the duration token is appended."""
  embeds, mask = ref.pipeline.encode_prompt(_prompts(prompts), torch.device("cpu"), 1)
  return embeds.float().numpy(), mask.numpy()


@torch.no_grad()
def encode_duration(ref: SA3Reference, duration: float, batch_size: int = 1) -> np.ndarray:
  """The duration embedding (batch_size, D): global AdaLN input and the extra context token."""
  return ref.pipeline.encode_duration(duration, torch.device("cpu"), 1, batch_size).float().numpy()


@torch.no_grad()
def conditioning(ref: SA3Reference, prompts, duration: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(context (B, T_text + 1, D), context_mask (B, T_text + 1), global (B, D)): what the DiT receives
  as encoder_hidden_states, encoder_attention_mask and global_hidden_states without CFG."""
  prompts = _prompts(prompts)
  embeds, mask = ref.pipeline.encode_prompt(prompts, torch.device("cpu"), 1)
  glob = ref.pipeline.encode_duration(duration, torch.device("cpu"), 1, len(prompts))
  context, context_mask = ref.pipeline.prepare_cross_attention(embeds, mask, glob)
  return context.float().numpy(), context_mask.numpy(), glob.float().numpy()
