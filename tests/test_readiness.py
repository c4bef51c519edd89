"""Ready for accelerators without one (issue 17): every program lowers for TPU and CUDA (shapes
only, real sizes), the memory plan, and the batch / budget refusals that share its estimate.

The default suite lowers a representative set at real size (both models, bfloat16, each attention
implementation, every kind of program); `-m slow` lowers every program of the list."""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import numpy as np
import pytest

from musickv_jax.cli import benchmark as benchmark_cli
from musickv_jax.cli.runner import run
from musickv_jax.config import named_config
from musickv_jax.errors import SettingsError
from musickv_jax.pipeline import memory
from musickv_jax.readiness import lowering, memory_plan, programs
from musickv_jax.readiness.programs import ProgramName

# (program, attention) lowered in the default suite, at real size, in bfloat16
REPRESENTATIVE = {
    "sao1.0": [("dit_call", "xla"), ("edit_step", "xla"), ("edit_step", "splash"), ("edit_chunk", "cudnn"),
               ("inversion_chunk", "xla"), ("vae_decode", None)],
    "sao-small": [("dit_call", "splash"), ("edit_chunk", "xla"), ("generation_chunk", "xla"),
                  ("window_group", "xla"), ("batch_bucket", "xla"), ("batch_bucket", "splash"),
                  ("schedule_gradient", "xla"), ("vae_encode", None)],
    "sa3-small": [("edit_step", "splash"), ("edit_chunk", "xla"), ("vae_decode", None)],
}


def check(outcomes: list[lowering.Outcome]) -> None:
  failed = [f"{o.name} {o.platform}: {o.status}" for o in outcomes if o.failed]
  assert not failed, "programs that no longer lower:\n" + "\n".join(failed)
  for o in outcomes:  # what may not lower here is cuDNN's attention without cuDNN, and nothing else
    assert o.ok or (o.name.attention == "cudnn" and o.platform == "cuda"), (o.name, o.platform, o.status)
    assert "\n" not in o.status


def test_representative_programs_lower_for_tpu_and_cuda():
  names = [ProgramName(model, program, "bf16", attention) for model, cases in REPRESENTATIVE.items()
           for program, attention in cases]
  start = time.perf_counter()
  outcomes = lowering.lower_all(names)
  print(f"lowered {len(outcomes)} (program, platform) pairs in {time.perf_counter() - start:.1f} s")
  check(outcomes)
  assert {(str(o.name), o.platform) for o in outcomes} >= {("sao1.0/edit_step/bf16/splash", "tpu"),
                                                           ("sao1.0/dit_call/bf16/xla", "cuda")}
  kinds = {o.name.program for o in outcomes}
  assert kinds == set(programs.DIT_PROGRAMS) | set(programs.VAE_PROGRAMS)  # every kind of program


@pytest.mark.slow
def test_every_program_lowers_for_tpu_and_cuda():
  check(lowering.lower_all(programs.all_names()))


def test_the_list_holds_every_program_of_the_issue():
  names = {str(n) for n in programs.all_names()}
  for model in ("sao1.0", "sao-small", "sa3-small"):
    for dtype in ("f32", "bf16"):
      for program in programs.DIT_PROGRAMS:
        assert f"{model}/{program}/{dtype}/xla" in names and f"{model}/{program}/{dtype}/splash" in names
      for program in programs.VAE_PROGRAMS:
        assert f"{model}/{program}/{dtype}" in names
    for program in programs.DIT_PROGRAMS:
      assert f"{model}/{program}/bf16/cudnn" in names and f"{model}/{program}/f32/cudnn" not in names
  assert len(names) == 3 * (2 * (2 * 8 + 2) + 8)
  assert ProgramName("sao1.0", "edit_step", "bf16", "splash").platforms == ("tpu",)


def test_cli_writes_the_contract_and_exits_1_when_a_program_does_not_lower(tmp_path, monkeypatch, capsys):
  chosen = [ProgramName("sao-small", "vae_decode", "f32", None),
            ProgramName("sao-small", "dit_call", "bf16", "cudnn")]
  monkeypatch.setattr(programs, "all_names", lambda models: [n for n in chosen if n.model in models])
  out = tmp_path / "lowering.json"
  assert run(benchmark_cli.COMMAND, ["--lower_for=tpu,cuda", "--lower_models=sao-small", f"--json_out={out}"]) == 0
  table = json.loads(out.read_text())
  assert set(table) == {"programs"}
  assert table["programs"]["sao-small/vae_decode/f32"] == {"tpu": "ok", "cuda": "ok"}
  assert set(table["programs"]["sao-small/dit_call/bf16/cudnn"]) == {"cuda"}
  cudnn = table["programs"]["sao-small/dit_call/bf16/cudnn"]["cuda"]
  if lowering.cudnn_present():
    assert cudnn == "ok"
  else:  # JAX's own reason (before the note the table adds) is that cuDNN is missing, nothing else
    assert "cudnn" in cudnn.split(" (cuDNN attention lowers only")[0].lower(), cudnn

  real_build = programs.build
  monkeypatch.setattr(programs, "build", lambda name: (_ for _ in ()).throw(ValueError("broken\nsecond line"))
                      if name.program == "vae_decode" else real_build(name))
  assert run(benchmark_cli.COMMAND, ["--lower_for=tpu", "--lower_models=sao-small", f"--json_out={out}"]) == 1
  status = json.loads(out.read_text())["programs"]["sao-small/vae_decode/f32"]["tpu"]
  assert status == "building the program failed: ValueError: broken"
  assert "FAILED sao-small/vae_decode/f32 tpu" in capsys.readouterr().out


def test_a_program_whose_lowering_fails_is_reported_failed_with_its_reason(tmp_path, monkeypatch, capsys):
  """The program builds, and jax.export then refuses it for TPU: it holds a host callback, which
  does not lower for TPU here (a real lowering error, not one the test raises before lowering)."""
  name = ProgramName("sao-small", "vae_decode", "f32", None)
  monkeypatch.setattr(programs, "all_names", lambda models: [name])
  real_build = programs.build

  def build(name):
    program = real_build(name)

    def with_a_callback(*args):
      unlowerable = jax.pure_callback(lambda: np.zeros((), np.float32), jax.ShapeDtypeStruct((), np.float32))
      return program.function(*args, **program.kwargs), unlowerable

    return dataclasses.replace(program, function=jax.jit(with_a_callback), kwargs={})

  monkeypatch.setattr(programs, "build", build)
  out = tmp_path / "lowering.json"
  assert run(benchmark_cli.COMMAND, ["--lower_for=tpu", "--lower_models=sao-small", f"--json_out={out}"]) == 1
  status = json.loads(out.read_text())["programs"]["sao-small/vae_decode/f32"]["tpu"]
  assert status != "ok" and not status.startswith("building"), status  # it failed in lowering, not building
  assert status.split(": ")[0].endswith("Error") and len(status) > 20 and "\n" not in status  # jax's reason, one line
  assert f"FAILED sao-small/vae_decode/f32 tpu: {status}" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--lower_for=gpu"], ["--lower_for=tpu", "--lower_models=sao-2"]])
def test_cli_refuses_unknown_platforms_and_models(argv, capsys):
  assert run(benchmark_cli.COMMAND, argv) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: --lower_") and "\n" not in err


# ----------------------------------------------------------------------------- memory


def test_memory_plan_table(capsys, tmp_path):
  entries = memory_plan.table()
  assert len(entries) == len(memory_plan.WINDOWS) * 2 * 7
  by = {(e.window.config, e.dtype, e.accelerator.name): e for e in entries if e.window.frames != 1292
        and e.window.frames != 4096}
  big = by[("sao-1.0", "bfloat16", "H100 80GB")]
  assert big.attention == "cudnn" and big.prompts == big.dit_rows // 2 and big.edits == big.prompts - 1
  # bfloat16 and a flash kernel hold far more rows than float32 with materialised logits
  assert by[("sao-1.0", "bfloat16", "TPU v5e")].dit_rows > 4 * by[("sao-1.0", "float32", "TPU v5e")].dit_rows
  # more memory, more rows
  assert by[("sao-1.0", "float32", "TPU v5e")].dit_rows < by[("sao-1.0", "float32", "TPU v4")].dit_rows \
      < by[("sao-1.0", "float32", "A100 80GB")].dit_rows < by[("sao-1.0", "float32", "H200")].dit_rows
  # the table is the budget check's arithmetic: its row count fits, one more does not
  config = named_config("sao-1.0").with_dtype("float32").with_attention("xla")
  e = by[("sao-1.0", "float32", "TPU v5e")]
  budget = e.accelerator.memory_gib * memory_plan.USABLE_FRACTION
  memory.check_rows(config, memory.config_params_bytes(config), e.dit_rows, 1024, budget)
  with pytest.raises(SettingsError):
    memory.check_rows(config, memory.config_params_bytes(config), e.dit_rows + 1, 1024, budget)
  assert run(benchmark_cli.COMMAND, ["--memory_plan", f"--json_out={tmp_path / 'm.json'}"]) == 0
  assert "| SAO 1.0, 47.6 s (1024 frames) | bfloat16 | H200 |" in capsys.readouterr().out
  assert len(json.loads((tmp_path / "m.json").read_text())["entries"]) == len(entries)
  # Stable Audio 3: a longer window holds fewer rows; Medium fewer than Small
  assert by[("sa3-small", "bfloat16", "H100 80GB")].dit_rows > by[("sa3-medium", "bfloat16", "H100 80GB")].dit_rows


@pytest.mark.parametrize("model", ["sao-small", "sa3-small"])
def test_the_estimate_bounds_the_compiled_program(model):
  """XLA's temporaries of the real-size edit step compiled for this CPU stay under the estimate (and
  within 3x of it: an estimate that is not absurdly loose)."""
  result = memory_plan.compiled_check(model, "float32")
  print(result)
  assert 1.0 <= result.ratio <= 3.0, result


def test_params_bytes_from_shapes():
  config = named_config("sao-1.0")
  f32, bf16 = memory.config_params_bytes(config), memory.config_params_bytes(config.with_dtype("bfloat16"))
  assert 4.5 * 2**30 < f32 < 5.5 * 2**30  # 1.06 B DiT + 156 M VAE + T5-base
  assert bf16 < 0.6 * f32


def test_an_oversized_batch_is_refused_in_one_line():
  config = named_config("sao-1.0")
  with pytest.raises(SettingsError) as info:
    memory.check_rows(config, memory.config_params_bytes(config), 64, 1024, 16.0, what="a device's batch")
  message = info.value.describe(lambda field: f"--{field}")
  assert "\n" not in message and "--memory_budget_gib" in message and "--rows_per_device" in message
  assert "rows fit" in message
