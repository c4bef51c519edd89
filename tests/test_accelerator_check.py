"""scripts/accelerator_check.sh on this CPU in its cheap mode (tiny model, no parity tests): every part
runs in its own process, the accelerator's parts are reported absent, and the JSON has its schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from musickv_jax.readiness import accelerator_check

ROOT = Path(__file__).resolve().parents[1]


def test_accelerator_check_runs_on_cpu_in_cheap_mode(tmp_path):
  out = tmp_path / "check.json"
  env = {**os.environ, "MUSICKV_CHECK_CHEAP": "1", "MUSICKV_SKIP_INSTALL": "1", "PYTHON": sys.executable,
         "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run(["bash", str(ROOT / "scripts" / "accelerator_check.sh"), str(out)], env=env, cwd=tmp_path,
                        capture_output=True, text=True, timeout=600, check=False)
  assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
  data = json.loads(out.read_text())
  assert data["schema"] == accelerator_check.SCHEMA
  parts = data["parts"]
  assert set(parts) == set(accelerator_check.PARTS)
  for part in parts.values():
    assert part["status"] in ("ok", "absent", "skipped") and isinstance(part["seconds"], float)
  assert parts["environment"]["backend"] == "cpu" and parts["environment"]["cheap"] is True
  assert parts["attention"]["status"] == "absent"
  cases = parts["bench"]["cases"]
  assert set(cases) == {f"{d}/{a}" for d in ("float32", "bfloat16") for a in ("xla", "cudnn", "splash")}
  assert cases["float32/cudnn"]["status"] == "absent" and cases["bfloat16/splash"]["status"] == "absent"
  measured = cases["float32/xla"]
  assert measured["status"] == "ok" and measured["edit_step"]["seconds"] > 0 and measured["dit_rows"] == 4
  assert measured["edit_100_steps_s"] == round(measured["edit_step"]["seconds"] * 100, 3)
  target = parts["bench"]["target"]
  assert target["measured_s"] is None and target["met"] is False and target["limit_s"] == 2.5
  small = parts["small_edit"]
  assert small["status"] == "ok" and small["edit"]["seconds"] > 0 and small["target"]["limit_s"] == 0.3
  sa3 = parts["sa3_edit"]
  assert sa3["status"] == "ok" and sa3["edit"]["seconds"] > 0 and sa3["solver"] == "pingpong" and sa3["frames"] == 8
  assert "target: 100-step 47 s SAO 1.0 edit" in done.stdout and "not measured here" in done.stdout


def test_a_part_that_times_out_is_recorded_and_the_rest_kept(tmp_path):
  out = tmp_path / "check.json"
  accelerator_check.record(out, "environment", {"backend": "cpu"}, 1.0)
  accelerator_check.record(out, "bench", {"status": "failed", "reason": "timed out after 150 s"}, 0.0)
  data = json.loads(out.read_text())
  assert data["parts"]["environment"]["status"] == "ok" and data["parts"]["bench"]["reason"].startswith("timed out")
  assert "small_edit   missing" in accelerator_check.table(data)
