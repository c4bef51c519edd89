"""The package as users deploy it: a wheel built from the repository, installed non-editable into
a fresh virtualenv (its dependencies resolved by pip from pyproject.toml, constrained to the
tested versions in requirements.txt), then its console commands run from an empty directory
outside the repository: musickv-convert on a tiny diffusers folder, musickv-edit with
--preset=musickv on the result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import soundfile as sf

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parent.parent
IGNORED = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "outputs", ".cache", "__pycache__")


# What a user's fresh shell has: the machine's settings (PATH without this test run's virtualenv,
# HOME, locale, temporary folder, pip's and TLS's configuration), and the test session's cache
# folders so that nothing lands in the user's home. Not PYTHONPATH, PYTHONHOME or VIRTUAL_ENV: with
# the repository on PYTHONPATH (and a stale musickv_jax.egg-info in it), pip would call the package
# installed already and install only its dependencies.
KEPT = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "MUSICKV_CACHE", "MUSICKV_COMPILATION_CACHE")


def fresh_environment() -> dict[str, str]:
  env = {name: value for name, value in os.environ.items() if name in KEPT or name.startswith("PIP_")}
  test_bin = str(Path(sys.executable).parent)
  env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != test_bin)
  return env


def run(command, cwd, timeout=900):
  result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=fresh_environment())
  assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
  return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """A fresh virtualenv with the wheel installed; returns its bin/ folder."""
  root = tmp_path_factory.mktemp("install")
  source = root / "source"
  shutil.copytree(REPO, source, ignore=IGNORED)  # build from a copy: nothing lands in the repository
  run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".", "-w", root / "dist"],
      cwd=source)
  (wheel,) = (root / "dist").glob("musickv_jax-*.whl")
  names = zipfile.ZipFile(wheel).namelist()
  assert "musickv_jax/configs/sao-1.0.json" in names and "musickv_jax/configs/presets/musickv.json" in names
  assert not any(n.startswith(("tests/", "scripts/", "convert/")) for n in names)
  modules = {str(p.relative_to(REPO)) for p in (REPO / "musickv_jax").rglob("*.py")}
  assert modules <= set(names), f"modules missing from the wheel: {sorted(modules - set(names))}"
  venv = root / "venv"
  run([sys.executable, "-m", "venv", venv], cwd=root)
  run([venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, "-c", REPO / "requirements.txt"], cwd=root)
  run([venv / "bin" / "python", "-m", "pip", "check"], cwd=root)
  return venv / "bin"


def test_installed_commands_convert_and_edit_from_an_empty_directory(installed, tiny, tmp_path):
  work = tmp_path / "empty"
  work.mkdir()
  for name in ("edit", "generate", "invert", "convert", "demo", "benchmark"):
    assert (installed / f"musickv-{name}").is_file(), name
  run([installed / "musickv-convert", "--source", tiny.ref.diffusers_dir, "--output", "ckpt"], cwd=work)
  result = run([installed / "musickv-edit", "--model", "ckpt", "--preset=musickv", "--vital_layers=1",
                "--prompts", "Piano solo", "Acoustic guitar, country, soft", "--num_inference_steps", "3",
                "--audio_end_in_s", "2", "--output_path", "out"], cwd=work)
  assert "wrote" in result.stdout
  record = json.loads((work / "out" / "edit.json").read_text())
  assert record["preset"] == "musickv" and record["settings"]["guidance_scale"] == 7.0
  assert record["versions"]["musickv-jax"] is not None
  audio, rate = sf.read(work / "out" / "edit_1.wav", always_2d=True)
  assert rate == tiny.model.config.sample_rate and audio.shape == (2 * rate, 2)
  # the library finds its shipped configs inside the installed package, not in a clone
  probe = run([installed / "python", "-c", "from musickv_jax import resources, config; "
               "print(resources.configs_dir()); print(config.named_config('sao-1.0').dit.depth)"], cwd=work)
  where, depth = probe.stdout.split()
  assert "site-packages" in where and depth == "24"
