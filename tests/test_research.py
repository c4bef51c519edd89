"""The research tools on a tiny model: the vital-layer probe, schedule learning by gradient (with a
finite-difference check in float64), resume of both, the evaluate command, and their errors."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from musickv_jax import pipeline
from musickv_jax.checkpoint import load_converted
from musickv_jax.cli import edit as edit_cli
from musickv_jax.cli import evaluate as evaluate_cli
from musickv_jax.cli import optimize_schedule as optimize_cli
from musickv_jax.cli import probe_layers as probe_cli
from musickv_jax.pipeline.plan import run_plan
from musickv_jax.research import optimization, probing
from musickv_jax.pipeline.settings import EditSettings, GenerationSettings
from tests import tolerances
from tests.test_cli import assert_one_line_error, cli

PROBE = dict(num_inference_steps=3, audio_end_in_s=1.5, guidance_scale=7.0)


def with_silent_layer(model, layer: int):
  """The model with one DiT layer's self-attention output projection zeroed: that layer's
  self-attention contributes nothing, so bypassing it changes nothing."""
  dit = jax.tree_util.tree_map(lambda x: x, model.params.dit)
  kernel = dit["blocks"]["self_attn"]["out"]["kernel"]
  dit["blocks"]["self_attn"]["out"]["kernel"] = kernel.at[layer].set(0.0)
  return dataclasses.replace(model, params=model.params.replace(dit=dit))


# ----------------------------------------------------------------------------- probing


def test_a_silent_layer_scores_zero_and_ranks_last(tiny44k):
  model = with_silent_layer(tiny44k.model, 5)
  settings = probing.ProbeSettings(prompts=("piano solo",), seeds=(0, 1), layers=(0, 5, 10, 20), **PROBE)
  summary = probing.summarize(probing.run_probe(model, settings), settings, model.config.dit.depth)
  print({layer: round(v["score"], 4) for layer, v in summary.layers.items()})
  assert summary.layers[5]["score"] == pytest.approx(0.0, abs=1e-6)
  assert summary.ranking[-1] == 5
  assert all(summary.layers[layer]["score"] > 0.01 for layer in (0, 10, 20))


def test_the_batched_probe_equals_one_layer_at_a_time(tiny44k):
  """Layers as rows of one run, or one run per layer: the same audio up to the float32 rounding of
  batches of other sizes (the derived bound of tests/tolerances.py). The scores are not compared:
  on a random model's noise-like audio a pitch contour flips on any change, so no rounding bound
  carries over to them."""
  settings = probing.ProbeSettings(prompts=("rock drums",), seeds=(3,), layers=(1, 7, 13), **PROBE)
  batched = probing.variant_audio(tiny44k.model, settings, 0, 3, (1, 7, 13))
  cfg = tiny44k.model.config
  frames = pipeline.latent_frames(settings.generation("rock drums", 3, cfg), cfg)
  bound = tolerances.decoded_run_to_run(cfg.dit, cfg.vae, frames, cfg.t5.max_length + 2, settings.guidance_scale)
  for i, layer in enumerate((1, 7, 13)):
    alone = probing.variant_audio(tiny44k.model, settings, 0, 3, (layer,))
    np.testing.assert_allclose(batched[[0, 1 + i]], alone, rtol=0, atol=bound * np.abs(alone).max())


def test_a_probe_row_equals_a_generation_with_that_layer_silent(tiny44k):
  """The probe's row with layer L bypassed is the model without L's self-attention in both CFG
  branches: it equals a plain generation (pipeline.build_plan + run_plan, no bypass mask at all) of
  the model whose layer L's self-attention output projection is zeroed (h + 0 = h: the same
  function). Batches of other sizes round in other orders: the derived bound of tests/tolerances.py.
  A bypass in one branch only leaves the other branch's layer in, amplified by the guidance."""
  model, cfg = tiny44k.model, tiny44k.model.config
  layers = (1, 13)
  settings = probing.ProbeSettings(prompts=("rock drums",), seeds=(3,), layers=layers, **PROBE)
  plan = probing.variant_plan(model, settings, 0, 3, layers)
  assert plan.use_cfg and [row.skip_layers for row in plan.rows] == [(), (1,), (13,)]
  probed, _ = run_plan(model, plan)
  gen = settings.generation("rock drums", 3, cfg)
  full, _ = run_plan(model, pipeline.build_plan(model, gen))
  bound = tolerances.run_to_run(cfg.dit, probed.shape[-1], cfg.t5.max_length + 2, settings.guidance_scale)
  np.testing.assert_allclose(probed[0], full[0], rtol=0, atol=bound * np.abs(full).max(), err_msg="the full row")
  for i, layer in enumerate(layers):
    silent = with_silent_layer(model, layer)
    alone, _ = run_plan(silent, pipeline.build_plan(silent, gen))
    error = float(np.abs(probed[1 + i] - alone[0]).max() / np.abs(alone).max())
    print(f"layer {layer}: probe row vs a generation without it {error:.1e} (bound {bound:.1e})")
    assert error <= bound, f"layer {layer}: probe row vs a generation without it: {error:.2e} > {bound:.2e}"
    assert np.abs(alone[0] - full[0]).max() > 10 * bound * np.abs(full).max()  # the layer matters


def test_probe_command_resume_and_preset(tiny44k, tmp_path, capsys):
  args = ["--model", tiny44k.path, "--prompts", "piano solo", "jazz trio", "--seeds=0", "--layers=2,4,6,8",
          "--num_inference_steps", "3", "--audio_end_in_s", "1.5", "--variants_per_call", "2", "--top_k", "2"]
  status, out, err = cli(capsys, probe_cli, *args, "--output_path", tmp_path / "whole")
  assert status == 0, err
  whole = json.loads((tmp_path / "whole" / "probe.json").read_text())
  assert sorted(whole["ranking"]) == [2, 4, 6, 8] and set(whole["layers"]) == {"2", "4", "6", "8"}
  assert set(whole["layers"]["2"]["metrics"]) == {"f0_chroma_accuracy", "chroma_cosine", "form_ssm_correlation",
                                                  "onset_correlation"}
  assert (tmp_path / "whole" / "probe.png").read_bytes()[:4] == b"\x89PNG"
  preset = json.loads((tmp_path / "whole" / "preset.json").read_text())
  assert preset["vital_layers"] == whole["ranking"][:2]

  # an interrupted probe: the settings, half the results and a line cut short by the kill
  part = tmp_path / "part"
  part.mkdir()
  shutil.copy(tmp_path / "whole" / probe_cli.SETTINGS, part)
  lines = (tmp_path / "whole" / probe_cli.RESULTS).read_text().splitlines()
  (part / probe_cli.RESULTS).write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
  status, out, err = cli(capsys, probe_cli, *args, "--output_path", part, "--resume")
  assert status == 0, err
  assert "3 result(s) already saved" in out
  resumed = json.loads((part / "probe.json").read_text())
  assert resumed["ranking"] == whole["ranking"]
  for layer in whole["layers"]:
    assert resumed["layers"][layer]["score"] == pytest.approx(whole["layers"][layer]["score"], abs=1e-6)

  status, _, err = cli(capsys, edit_cli, "--model", tiny44k.path, "--prompts", "a", "b", "--preset",
                       tmp_path / "whole" / "preset.json", "--num_inference_steps", "2", "--audio_end_in_s", "1",
                       "--output_path", tmp_path / "edit")
  assert status == 0, err
  assert json.loads((tmp_path / "edit" / "edit.json").read_text())["editing"]["vital_layers"] == preset["vital_layers"]


@pytest.mark.parametrize("args,message,status", [
    (["--prompts", "a", "--layers=2,99"], "--layers: layer 99 is out of range; this model's layers are 0..23", 1),
    (["--prompts_file", "EMPTY"], "has no prompts (one a line", 2),
    (["--prompts", "a", "--top_k", "0"], "--top_k must be between 1 and the number of probed layers", 1),
    (["--prompts", "a", "--seeds=x"], "--seeds takes comma-separated integers", 2),
])
def test_probe_command_errors(tiny44k, tmp_path, capsys, args, message, status):
  (tmp_path / "empty.txt").write_text("# only a comment\n\n")
  args = [str(tmp_path / "empty.txt") if a == "EMPTY" else a for a in args]
  got, _, err = cli(capsys, probe_cli, "--model", tiny44k.path, *args, "--output_path", tmp_path / "o")
  assert_one_line_error(got, err, message, expected_status=status)
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ----------------------------------------------------------------------------- learned schedules


@pytest.mark.fast
def test_the_total_loss_is_its_documented_formula():
  """research/optimization.py's docstring: minimised, - fidelity_weight * fidelity
  - editability_weight * editability + smoothness_weight * smoothness (fidelity and editability
  maximised, smoothness minimised). Fixed terms and weights that are exact in binary, so the
  comparison is exact; the gradient check compares the loss only with itself and cannot see a sign."""
  doc = " ".join(optimization.__doc__.split())
  for documented in ("- fidelity_weight * fidelity", "- editability_weight * editability",
                     "+ smoothness_weight * smoothness"):
    assert documented in doc, documented
  terms = {"fidelity": jnp.float32(0.75), "editability": jnp.float32(0.5), "smoothness": jnp.float32(0.25)}
  weights = optimization.ObjectiveWeights(fidelity=2.0, editability=3.0, smoothness=5.0)
  assert float(optimization.total_loss(terms, weights)) == -2.0 * 0.75 - 3.0 * 0.5 + 5.0 * 0.25  # -1.75
  defaults = optimization.ObjectiveWeights()
  # 0.1 is not exact in binary: three float32 roundings of values below 2 (2^-23 each) at most
  assert float(optimization.total_loss(terms, defaults)) == pytest.approx(-0.75 - 0.5 + 0.1 * 0.25, abs=3 * 2.0 ** -23)
  # each term on its own: more fidelity or editability lowers the loss, more change raises it
  for name, sign, weight in (("fidelity", -1.0, 2.0), ("editability", -1.0, 3.0), ("smoothness", 1.0, 5.0)):
    one = {key: jnp.float32(1.0 if key == name else 0.0) for key in terms}
    assert float(optimization.total_loss(one, weights)) == sign * weight, name


def _problem(model, steps=4, layers=(20, 3)):
  gen = GenerationSettings(prompts=("piano solo", "acoustic guitar"), num_inference_steps=steps,
                           audio_end_in_s=1.0, latent_length="fit")
  cfg = model.config
  return optimization.make_problem(model, pipeline.build_plan(model, EditSettings(gen, vital_layers=layers)),
                                   pipeline.output_span(gen, cfg))


def test_gradient_matches_finite_differences(tiny44k):
  """d(objective)/d(logits) along a random direction, jax.grad against central differences, in
  float64 (the whole chain: sampler, VAE decode, metrics). The bound is derived in the test:
    truncation   the central difference's h^2 term, estimated from D(h) and D(2h) (Richardson: 4x apart)
    rounding     float64 rounding of the loss over 2h: u64 |f| / (h |f'|)
    float32 floor a few float32 roundings that stay in the chain (the time features and the
                 conditioning are float32): 4 u32
  times a safety factor of 10. A sign or term wrong in the objective changes it by far more."""
  with jax.enable_x64(True):
    model = load_converted(tiny44k.path, dtype="float64")
    problem = _problem(model)
    params = optimization.ScheduleParameters(steps=4, n_layers=2, time_bins=3)
    model_params = model.params
    weights = optimization.ObjectiveWeights()

    def loss(logits):
      return optimization.total_loss(optimization.objective_terms(problem, model_params, params, logits), weights)

    logits = params.reference_logits().astype(jnp.float64)
    direction = jnp.asarray(np.random.default_rng(0).normal(size=logits.shape))
    analytic = float(jnp.sum(jax.jit(jax.grad(loss))(logits) * direction))
    loss_jit = jax.jit(loss)

    def central(h):
      return (float(loss_jit(logits + h * direction)) - float(loss_jit(logits - h * direction))) / (2 * h)

    h = 1e-5
    numeric, coarse = central(h), central(2 * h)
    value = float(loss_jit(logits))
  error = abs(analytic - numeric) / abs(numeric)
  truncation = abs(coarse - numeric) / 3 / abs(numeric)
  rounding = 2.0 ** -53 * abs(value) / (h * abs(numeric))
  bound = 10 * (truncation + rounding + 4 * 2.0 ** -24)
  print(f"gradient check: analytic {analytic:.8f}, central difference {numeric:.8f}, relative error {error:.1e} "
        f"(bound {bound:.1e}: truncation {truncation:.1e}, rounding {rounding:.1e})")
  assert error < bound


def test_optimize_command_and_resume(tiny44k, tmp_path, capsys):
  args = ["--model", tiny44k.path, "--prompts", "piano solo", "acoustic guitar", "--vital_layers=20,3",
          "--num_inference_steps", "4", "--time_bins", "3", "--audio_end_in_s", "1", "--learning_rate", "0.003"]
  status, _, err = cli(capsys, optimize_cli, *args, "--iterations", "4", "--output_path", tmp_path / "straight")
  assert status == 0, err
  straight = tmp_path / "straight"
  assert sorted(p.name for p in straight.iterdir()) == ["checkpoint", "history.json", "run.json", "schedule.npy",
                                                        "schedule.png"]
  history = json.loads((straight / "history.json").read_text())
  assert set(history) == {"loss", "fidelity", "editability"} and all(len(v) == 4 for v in history.values())
  print("objective over 4 Adam steps:", [round(v, 5) for v in history["loss"]])
  assert history["loss"][-1] < history["loss"][0] - 1e-3  # a few steps lower the objective
  schedule = np.load(straight / "schedule.npy")
  assert schedule.shape == (4, 2) and schedule.dtype == np.float32 and np.all((schedule >= 0) & (schedule <= 1))

  status, _, err = cli(capsys, optimize_cli, *args, "--iterations", "2", "--output_path", tmp_path / "resumed")
  assert status == 0, err
  status, out, err = cli(capsys, optimize_cli, *args, "--iterations", "4", "--output_path", tmp_path / "resumed",
                         "--resume")
  assert status == 0, err
  assert "resuming after iteration 2" in out
  # Orbax restores the state bit for bit and the step is the same program: the same run
  np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "schedule.npy"), schedule)
  resumed = json.loads((tmp_path / "resumed" / "history.json").read_text())
  assert resumed["loss"] == history["loss"]

  status, _, err = cli(capsys, edit_cli, "--model", tiny44k.path, "--prompts", "piano solo", "acoustic guitar",
                       "--vital_layers=20,3", "--num_inference_steps", "4", "--audio_end_in_s", "1",
                       "--schedule", straight / "schedule.npy", "--output_path", tmp_path / "edit")
  assert status == 0, err


@pytest.mark.parametrize("args,message,status", [
    (["--vital_layers=20,99"], "--vital_layers: layer 99 is out of range", 1),
    (["--iterations", "0"], "--iterations must be at least 1, got 0", 2),
    (["--time_bins", "9"], "--time_bins (9) cannot exceed --num_inference_steps (4)", 1),
    (["--learning_rate", "-1"], "--learning_rate must be a positive number", 1),
    (["--resume"], "holds no optimisation to continue", 2),
])
def test_optimize_command_errors(tiny44k, tmp_path, capsys, args, message, status):
  base = ["--model", tiny44k.path, "--prompts", "a", "b", "--num_inference_steps", "4", "--time_bins", "3",
          "--audio_end_in_s", "1", "--output_path", tmp_path / "o"]
  got, _, err = cli(capsys, optimize_cli, *base, *args)
  assert_one_line_error(got, err, message, expected_status=status)
  assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ----------------------------------------------------------------------------- evaluate


class LoudnessScorer:
  """A stand-in for a learned scorer, to test the plug-in path (it scores loudness, not text)."""

  name = "loudness"
  higher_is_better = True

  def score(self, audio, sample_rate, texts):
    assert len(texts) == len(audio)
    return np.sqrt(np.mean(np.square(audio), axis=(1, 2)))


def test_evaluate_command(tmp_path, capsys):
  from tests.test_metrics import BRIGHT_TIMBRE, MELODY, REORDER, SOFT_TIMBRE, synth

  files = {}
  for name, notes, timbre in (("source", MELODY, SOFT_TIMBRE), ("edit", MELODY, BRIGHT_TIMBRE),
                              ("plain", [MELODY[i] for i in REORDER], BRIGHT_TIMBRE)):
    files[name] = tmp_path / f"{name}.wav"
    sf.write(files[name], synth(notes, timbre, rate=44100), 44100)
  status, out, err = cli(capsys, evaluate_cli, "--source", files["source"], "--edits", files["edit"], files["source"],
                         files["plain"], "--plain", files["plain"], "--edit_prompts", "bright guitar",
                         "--scorer=tests.test_research:LoudnessScorer", "--output_path", tmp_path / "eval")
  assert status == 0, err
  result = json.loads((tmp_path / "eval" / "metrics.json").read_text())
  assert set(result) == {"edits", "higher_is_better"}
  edit, itself, plain = result["edits"]
  assert edit["file"] == str(files["edit"]) and set(edit["metrics"]) == set(result["higher_is_better"])
  for name, higher in result["higher_is_better"].items():
    if name in ("loudness", "editability", "plain_logmel_distance"):
      continue
    assert itself["metrics"][name] == pytest.approx(1.0 if higher else 0.0, abs=1e-6), name
  assert itself["metrics"]["editability"] == pytest.approx(0.0, abs=1e-6)  # the source moved nowhere
  assert plain["metrics"]["editability"] == pytest.approx(1.0, abs=1e-6)  # all the way to the plain edit
  assert 0 < edit["metrics"]["editability"] < 1  # the brighter edit moved part of the way
  assert edit["metrics"]["cqt1_pcc"] > 0.9 and edit["metrics"]["f0_chroma_accuracy"] > 0.9
  for shown in ("f0_chroma_accuracy ^", "cqt1_pcc ^", "timbre_distance v", "logmel_distance v"):
    assert shown in out, shown


@pytest.mark.parametrize("args,message", [
    (["--edits", "MISSING"], "audio file not found"),
    ([], "--edits is required"),
    (["--edits", "SRC", "--scorer=nowhere.module:Thing"], "--scorer 'nowhere.module:Thing' cannot be imported"),
])
def test_evaluate_errors(tmp_path, capsys, args, message):
  sf.write(tmp_path / "src.wav", 0.1 * np.ones((4410, 2), np.float32), 44100)
  args = [{"MISSING": str(tmp_path / "missing.wav"), "SRC": str(tmp_path / "src.wav")}.get(a, a) for a in args]
  status, _, err = cli(capsys, evaluate_cli, "--source", tmp_path / "src.wav", *args, "--output_path", tmp_path / "o")
  assert status in (1, 2) and message in err and err.strip().count("\n") == 0, err
  assert not (tmp_path / "o").exists()
