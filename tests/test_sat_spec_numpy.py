"""docs/sao_small_spec.md, executed: a float64 NumPy implementation written from the spec's formulas
(sections 2-6: number conditioner, DiT with q/k LayerNorm and partial rotate-half rotary, CFG on the
denoised estimates with APG, the default LogSNR schedule, Euler and ping-pong) against
stable-audio-tools 0.0.20 itself, on the tiny rf_denoiser model. If SAT changes behaviour, or the spec
is wrong, this fails."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_audio_tools", reason="the stable-audio-tools reference is not installed (Makefile .test)")

from tests import sat_reference as S  # noqa: E402

TOL = 2e-5  # relative to max |reference|; SAT runs in float32


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  ref = S.build_tiny(tmp_path_factory.mktemp("spec"), "rf_denoiser", seed=7, save=False)
  weights = {k: v.double().numpy() for k, v in S.state_dict(ref).items()}
  cond = S.conditioning(ref, ["piano solo", "warm synth bass"], [11.0, 300.0], t5_dtype="float32")
  return ref, weights, cond


def _silu(x):
  return x / (1 + np.exp(-x))


def _linear(x, w, b=None):
  return x @ w.T + (0 if b is None else b)


def _layer_norm(x, gain, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * gain + bias


def _attention(q, k, v):  # (B, H, N, d)
  scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
  p = np.exp(scores - scores.max(-1, keepdims=True))
  return (p / p.sum(-1, keepdims=True)) @ v


def _rotary(x, rot_dim):  # (B, H, S, d): rotate-half on the first rot_dim channels, positions 0..S-1
  inv_freq = 1.0 / 10000 ** (np.arange(0, rot_dim, 2) / rot_dim)
  angles = np.arange(x.shape[-2])[:, None] * inv_freq[None]
  angles = np.concatenate([angles, angles], -1)
  rotated, rest = x[..., :rot_dim], x[..., rot_dim:]
  half = rot_dim // 2
  turned = np.concatenate([-rotated[..., half:], rotated[..., :half]], -1)
  return np.concatenate([rotated * np.cos(angles) + turned * np.sin(angles), rest], -1)


def dit(w, config, x, t, cross, glob):
  """Spec section 2: v for x (B, C, T), t (B,), cross tokens (B, N, 768), global (B, 768)."""
  p = "model.model."
  width, heads = config["embed_dim"], config["num_heads"]
  d = width // heads
  rot_dim = max(d // 2, 32)

  def split(z):
    return z.reshape(*z.shape[:2], heads, d).transpose(0, 2, 1, 3)

  def merge(z):
    return z.transpose(0, 2, 1, 3).reshape(z.shape[0], z.shape[2], width)

  def mlp(z, name, bias=False):
    b0, b2 = (w[f"{p}{name}.0.bias"], w[f"{p}{name}.2.bias"]) if bias else (None, None)
    return _linear(_silu(_linear(z, w[f"{p}{name}.0.weight"], b0)), w[f"{p}{name}.2.weight"], b2)

  context = mlp(cross, "to_cond_embed")
  angles = 2 * np.pi * t[:, None] * w[p + "timestep_features.weight"][:, 0][None]
  global_token = mlp(glob, "to_global_embed") + mlp(np.concatenate([np.cos(angles), np.sin(angles)], -1),
                                                    "to_timestep_embed", bias=True)
  x = x + np.einsum("oc,bct->bot", w[p + "preprocess_conv.weight"][..., 0], x)
  h = _linear(x.transpose(0, 2, 1), w[p + "transformer.project_in.weight"])
  h = np.concatenate([global_token[:, None], h], 1)
  for i in range(config["depth"]):
    layer = f"{p}transformer.layers.{i}."

    def norm(name, z, eps=1e-5, layer=layer):
      return _layer_norm(z, w[layer + name + ".gamma"], w[layer + name + ".beta"], eps)

    def qk_norm(attn, which, z, layer=layer):
      return _layer_norm(z, w[f"{layer}{attn}.{which}_norm.weight"], w[f"{layer}{attn}.{which}_norm.bias"], 1e-6)

    q, k, v = map(split, np.split(_linear(norm("pre_norm", h), w[layer + "self_attn.to_qkv.weight"]), 3, -1))
    q, k = qk_norm("self_attn", "q", q), qk_norm("self_attn", "k", k)
    out = _attention(_rotary(q, rot_dim), _rotary(k, rot_dim), v)
    h = h + _linear(merge(out), w[layer + "self_attn.to_out.weight"])
    q = split(_linear(norm("cross_attend_norm", h), w[layer + "cross_attn.to_q.weight"]))
    k, v = map(split, np.split(_linear(context, w[layer + "cross_attn.to_kv.weight"]), 2, -1))
    out = _attention(qk_norm("cross_attn", "q", q), qk_norm("cross_attn", "k", k), v)
    h = h + _linear(merge(out), w[layer + "cross_attn.to_out.weight"])
    value, gate = np.split(_linear(norm("ff_norm", h), w[layer + "ff.ff.0.proj.weight"],
                                   w[layer + "ff.ff.0.proj.bias"]), 2, -1)
    h = h + _linear(value * _silu(gate), w[layer + "ff.ff.2.weight"], w[layer + "ff.ff.2.bias"])
  out = _linear(h, w[p + "transformer.project_out.weight"])[:, 1:].transpose(0, 2, 1)
  return out + np.einsum("oc,bct->bot", w[p + "postprocess_conv.weight"][..., 0], out)


def guided(w, config, x, t, cross, glob, scale, apg):
  """Spec section 4: CFG on the denoised estimates (uncond = zero cross tokens, same global), APG."""
  tt = t[:, None, None]
  cond = x - tt * dit(w, config, x, t, cross, glob)
  uncond = x - tt * dit(w, config, x, t, np.zeros_like(cross), glob)
  diff = cond - uncond
  unit = cond / np.sqrt((cond ** 2).sum((1, 2), keepdims=True))
  orthogonal = diff - (diff * unit).sum((1, 2), keepdims=True) * unit
  return (x - (cond + (scale - 1) * (apg * orthogonal + (1 - apg) * diff))) / tt


def _rel(a, b):
  return np.abs(a - b).max() / np.abs(b).max()


def test_number_conditioner(setup):
  _, w, cond = setup
  key = "conditioner.conditioners.seconds_total.embedder.embedding."
  u = np.clip(np.array([11.0, 300.0]), 0, 256) / 256
  angles = u[:, None] * w[key + "0.weights"][None] * 2 * np.pi
  embedded = _linear(np.concatenate([u[:, None], np.sin(angles), np.cos(angles)], -1), w[key + "1.weight"],
                     w[key + "1.bias"])
  assert _rel(embedded, cond["seconds_total"][:, 0]) < TOL


def test_dit_and_guidance(setup):
  ref, w, cond = setup
  config = ref.config["model"]["diffusion"]["config"]
  x = np.random.default_rng(0).standard_normal((2, 4, S.LATENT_FRAMES))
  t = np.array([0.8, 0.25])
  cross, glob = cond["cross_attn_cond"].astype(np.float64), cond["global_cond"].astype(np.float64)
  assert _rel(dit(w, config, x, t, cross, glob), S.dit_forward(ref, x, t, cond)) < TOL
  for apg in (0.0, 0.5, 1.0):
    ours = guided(w, config, x, t, cross, glob, 4.0, apg)
    assert _rel(ours, S.dit_forward(ref, x, t, cond, cfg_scale=4.0, apg_scale=apg)) < TOL


def test_schedule_and_samplers(setup):
  ref, w, cond = setup
  config = ref.config["model"]["diffusion"]["config"]
  u = np.linspace(1, 0, 9)
  schedule = 1 / (1 + np.exp(2 - 8.2 * u))
  schedule[0], schedule[-1] = 1, 0
  np.testing.assert_allclose(S.rf_schedule(8), schedule, atol=1e-6)

  steps, rng = 4, np.random.default_rng(1)
  ts = S.rf_schedule(steps).astype(np.float64)
  x = rng.standard_normal((2, 4, S.LATENT_FRAMES)).astype(np.float32)
  noise = [rng.standard_normal(x.shape).astype(np.float32) for _ in range(steps)]
  cross, glob = cond["cross_attn_cond"].astype(np.float64), cond["global_cond"].astype(np.float64)
  y = x.astype(np.float64)
  for i in range(steps):  # ping-pong with CFG 3 (APG)
    denoised = y - ts[i] * guided(w, config, y, np.full(2, ts[i]), cross, glob, 3.0, 1.0)
    y = (1 - ts[i + 1]) * denoised + ts[i + 1] * noise[i]
  assert _rel(y, S.sample(ref, x, cond, steps=steps, step_noise=noise, cfg_scale=3.0)) < TOL
  y = x.astype(np.float64)
  for i in range(steps):  # Euler without guidance
    y = y + (ts[i + 1] - ts[i]) * dit(w, config, y, np.full(2, ts[i]), cross, glob)
  assert _rel(y, S.sample(ref, x, cond, steps=steps, sampler_type="euler")) < TOL
