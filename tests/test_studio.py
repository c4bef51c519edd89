"""musickv-studio through its API (gradio_client), as a real server process on the tiny 44.1 kHz
model: four clients at once, each edit equal to musickv-edit with the same settings; the second
edit of a recording takes its inversion from the cache; a FlowEdit of one region equal to
musickv-edit's, which keeps the recording's latent outside the region; /compare equal to
musickv-compare run with the command its compare.json records; bad input answered in one line while
the server keeps serving; login, file serving; Ctrl-C in one line, no temporary left.
The page in a real browser: tests/test_studio_browser.py (make test-browser)."""

from __future__ import annotations

import concurrent.futures
import http.cookiejar
import json
import shlex
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.studio  # about two minutes on 2 cores: `make test-studio`

gradio_client = pytest.importorskip("gradio_client", reason="musickv-studio needs the studio extra (gradio)")

from musickv_jax.cli import compare as compare_command  # noqa: E402
from musickv_jax.cli import edit as edit_command  # noqa: E402
from musickv_jax.cli.runner import run  # noqa: E402
from tests import studio_server, tolerances  # noqa: E402

AUTH = ("mkv", "s3cret")
STEPS = 4
TOLERANCE = 1e-4  # max |studio - musickv-edit| / max |musickv-edit| for an edit that ran alone (measured: 0)


@pytest.fixture(scope="module")
def studio(tiny44k, tmp_path_factory):
  root = tmp_path_factory.mktemp("studio")
  server = studio_server.start(tiny44k.path, root / "out", "--auth", ":".join(AUTH), "--gather_s", "1.0")
  yield server
  server.stop()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
  path = tmp_path_factory.mktemp("recording") / "guitar.wav"
  t = np.arange(int(2.5 * 44100)) / 44100
  x = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 990 * t)
  sf.write(path, np.stack([x, 0.8 * x], axis=1), 44100)
  return path


def client(server, tmp_path):
  return gradio_client.Client(server.url, auth=AUTH, download_files=str(tmp_path / "downloads"), verbose=False)


def edit(c, source_prompt, edit_prompt, audio=None, *, seed=0, duration_s=3.0, guidance_scale=7.0, vital_layers="",
         **method):
  """method: the method's parameters (method, sdedit_level, regions); left out: the API's defaults."""
  return c.predict(source_prompt=source_prompt, edit_prompt=edit_prompt,
                   audio=gradio_client.handle_file(str(audio)) if audio else None, num_inference_steps=STEPS,
                   guidance_scale=guidance_scale, seed=seed, duration_s=duration_s, vital_layers=vital_layers,
                   api_name="/edit", **method)


def musickv_edit(model, out, source_prompt, edit_prompt, audio=None, *, seed=0, duration_s=3.0, guidance_scale=7.0):
  """The same edit from the command line (in this process)."""
  args = ["--model", str(model), "--prompts", source_prompt, edit_prompt, f"--num_inference_steps={STEPS}",
          f"--guidance_scale={guidance_scale}", f"--seed={seed}", "--output_path", str(out)]
  args += [f"--input_audio={audio}", f"--input_end_s={duration_s}"] if audio else [f"--audio_end_in_s={duration_s}"]
  assert run(edit_command.COMMAND, args) == 0
  return out


def run_recorded(command: str, recording: Path, out: Path, *extra: str, module=edit_command) -> Path:
  """The command line a studio record holds, run in this process on the original recording (the
  server read a copy of the upload)."""
  args = shlex.split(command)
  inputs = [i for i, arg in enumerate(args) if arg.startswith("--input_audio=")]
  assert len(inputs) == 1, command
  args[inputs[0]] = f"--input_audio={recording}"
  assert run(module.COMMAND, [*args[1:], "--output_path", str(out), *extra]) == 0, command
  return out


def relative_difference(studio_wav, cli_wav) -> float:
  ours, _ = sf.read(studio_wav, always_2d=True)
  ref, _ = sf.read(cli_wav, always_2d=True)
  assert ours.shape == ref.shape, (studio_wav, ours.shape, ref.shape)
  return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))


def test_four_clients_at_once_batched_each_equal_to_musickv_edit(studio, tiny44k, tmp_path):
  requests = [("Piano solo", "Acoustic guitar, country, soft", 1), ("Rock drums", "Jazz brushes", 2),
              ("Ambient pad", "String quartet", 3), ("Lo-fi beat", "Big band", 4)]
  clients = [client(studio, tmp_path / f"c{i}") for i in range(len(requests))]
  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
    futures = [pool.submit(edit, c, src, dst, seed=seed) for c, (src, dst, seed) in zip(clients, requests)]
    results = [f.result(timeout=600) for f in futures]
  wall = time.perf_counter() - start
  records = [json.loads(Path(r[3]).read_text()) for r in results]
  batched = [record["studio"]["batch_requests"] for record in records]
  assert max(batched) >= 2, batched  # same-shape requests shared a sampler call
  cfg = tiny44k.model.config  # rows of a batch of another size round in another order: the derived bound
  bound = tolerances.decoded_run_to_run(cfg.dit, cfg.vae, cfg.dit.sample_size, cfg.t5.max_length + 2, 7.0)
  worst = {True: 0.0, False: 0.0}  # batched with others, alone
  for (src, dst, seed), result, record in zip(requests, results, records):
    assert record["settings"]["prompts"] == [src, dst] and record["settings"]["seed"] == seed
    assert record["settings"]["num_inference_steps"] == STEPS and record["studio"]["inversion_cached"] is None
    out = musickv_edit(tiny44k.path, tmp_path / f"cli-{seed}", src, dst, seed=seed)
    error = max(relative_difference(result[0], out / "source.wav"), relative_difference(result[1], out / "edit_1.wav"))
    shared = record["studio"]["batch_requests"] > 1
    worst[shared] = max(worst[shared], error)
    assert error <= (bound if shared else TOLERANCE), (seed, shared, error)
    assert Path(result[2]).name == "spectrograms.png" and Path(result[2]).stat().st_size > 0
  print(f"\n4 clients at once: {wall:.1f} s wall, requests per sampler call {sorted(batched)}; "
        f"max |studio - musickv-edit| / max |musickv-edit|: batched {worst[True]:.1e} (bound {bound:.1e}), "
        f"alone {worst[False]:.1e}")


def test_second_edit_of_a_recording_skips_the_inversion(studio, tiny44k, recording, tmp_path):
  c = client(studio, tmp_path)
  first = edit(c, "clean guitar", "classical piano", recording, duration_s=15)
  second = edit(c, "clean guitar", "church organ", recording, duration_s=15)
  one, two = (json.loads(Path(r[3]).read_text()) for r in (first, second))
  assert one["studio"]["inversion_cached"] is False and one["studio"]["inversion_seconds"] > 0
  assert two["studio"]["inversion_cached"] is True and two["studio"]["inversion_seconds"] == 0
  assert Path(second[0]).name == "source_reconstruction.wav"
  audio, rate = sf.read(second[1], always_2d=True)
  assert rate == 44100 and abs(audio.shape[0] - sf.info(recording).frames) <= 1  # the recording's own length
  out = musickv_edit(tiny44k.path, tmp_path / "cli", "clean guitar", "church organ", recording, duration_s=15)
  assert relative_difference(second[0], out / "source_reconstruction.wav") <= TOLERANCE
  assert relative_difference(second[1], out / "edit_1.wav") <= TOLERANCE


def test_a_flowedit_of_one_region_equals_musickv_edit_and_keeps_the_recording_outside(studio, tiny44k, recording,
                                                                                      tmp_path):
  from musickv_jax import pipeline

  c = client(studio, tmp_path)
  region = (0.8, 1.6)
  result = edit(c, "bright guitar tone", "warm cello", recording, duration_s=0, guidance_scale=3.0,
                method="flowedit", regions=f"{region[0]},{region[1]}")
  record = json.loads(Path(result[3]).read_text())
  assert record["editing"]["method"] == "flowedit" and record["editing"]["regions"] == [list(region)]
  assert record["studio"]["inversion_cached"] is None  # FlowEdit inverts nothing
  command = record["command"]
  assert command.startswith("musickv-edit ") and "--edit_method=flowedit" in command, command
  assert "--edit_region=0.8,1.6" in command, command
  out = run_recorded(command, recording, tmp_path / "cli", "--save_latents", str(tmp_path / "cli" / "latents.npy"))
  errors = [relative_difference(result[i], out / name) for i, name in ((0, "source_reconstruction.wav"),
                                                                       (1, "edit_1.wav"))]
  assert max(errors) <= TOLERANCE, errors
  # the command's latent: the recording's own outside the region and its crossfade, bit for bit
  model = tiny44k.model
  heard = np.asarray(pipeline.encode_audio(model, sf.read(out / "input.wav", always_2d=True, dtype="float32")[0].T))[0]
  saved = np.load(out / "latents.npy")
  assert saved.shape[1:] == heard.shape, (saved.shape, heard.shape)
  rate = model.config.sample_rate / model.config.vae.hop_length
  fade = int(round(record["editing"]["region_crossfade_s"] * rate))
  outside = np.ones(heard.shape[-1], bool)
  outside[int(np.floor(region[0] * rate)) - fade:int(np.ceil(region[1] * rate)) + fade] = False
  assert outside.sum() >= 10 and not outside.all()
  np.testing.assert_array_equal(saved[1][:, outside], heard[:, outside])
  assert np.abs(saved[1][:, ~outside] - heard[:, ~outside]).max() > 1e-3  # and inside, the edit moved it
  print(f"\n/edit flowedit region {region}: |studio - musickv-edit| / max |musickv-edit| {max(errors):.1e}; "
        f"{int(outside.sum())} of {outside.size} latent frames kept bit for bit")


def test_compare_equals_musickv_compare_with_its_recorded_command(studio, recording, tmp_path):
  c = client(studio, tmp_path)
  methods = "inversion,flowedit,sdedit:0.5"
  record_path, plot, files = c.predict(source_prompt="a guitar tone", edit_prompt="a church organ",
                                       audio=gradio_client.handle_file(str(recording)), methods=methods,
                                       without_injection=True, num_inference_steps=STEPS, guidance_scale=3.0, seed=5,
                                       vital_layers="", api_name="/compare")
  ours = json.loads(Path(record_path).read_text())
  labels = ["inversion", "inversion-no-kv", "flowedit", "flowedit-no-kv", "sdedit-0.5", "sdedit-0.5-no-kv"]
  assert [row["label"] for row in ours["rows"]] == labels
  assert all(row["error"] is None and row["metrics"] for row in ours["rows"]), ours["rows"]
  assert ours["studio"]["methods"] == methods and ours["studio"]["input_audio"] == recording.name
  assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert [point["label"] for point in ours["plot"]["points"]] == labels
  names = sorted(Path(f).name for f in files)
  assert names == sorted(["compare.json", "index.html", "fidelity_editability.png", "input.wav",
                          *(f"{label}.wav" for label in labels)]), names
  served = {Path(f).name: Path(f) for f in files}
  command = ours["command"]
  assert command.startswith("musickv-compare ") and f"--methods={methods}" in command, command
  out = run_recorded(command, recording, tmp_path / "cli", module=compare_command)
  theirs = json.loads((out / "compare.json").read_text())
  timings = ("inversion_seconds", "sampling_seconds")
  strip = [{key: value for key, value in row.items() if key not in timings} for row in ours["rows"]]
  assert strip == [{key: value for key, value in row.items() if key not in timings} for row in theirs["rows"]]
  assert ours["plot"] == theirs["plot"] and ours["prompts"] == theirs["prompts"]
  errors = {label: relative_difference(served[f"{label}.wav"], out / f"{label}.wav") for label in labels}
  assert max(errors.values()) <= TOLERANCE, errors
  print(f"\n/compare vs musickv-compare: rows equal; max |studio - cli| / max |cli| per WAV "
        f"{max(errors.values()):.1e}")


def test_bad_compare_requests_are_one_line(studio, recording, tmp_path):
  c = client(studio, tmp_path)
  cases = [(dict(methods="inversion,magic"), "methods: unknown method 'magic'"),
           (dict(audio=None), "audio is empty: a comparison edits a recording"),
           (dict(vital_layers="99"), "vital layers: layer 99 is out of range")]
  for kwargs, expected in cases:
    asked = dict(source_prompt="piano", edit_prompt="guitar", audio=gradio_client.handle_file(str(recording)),
                 num_inference_steps=STEPS) | kwargs
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
      c.predict(api_name="/compare", **asked)
    message = str(caught.value)
    assert expected in message and "\n" not in message and "--" not in message, message


def test_bad_input_is_one_line_and_the_server_keeps_serving(studio, tmp_path):
  c = client(studio, tmp_path)
  text = tmp_path / "notes.wav"
  text.write_text("this is not audio\n")
  silent = tmp_path / "silent.wav"
  sf.write(silent, np.zeros((44100, 2)), 44100)
  cases = [(dict(audio=text), "notes.wav: cannot read it as audio"), (dict(audio=silent), "silent"),
           (dict(vital_layers="99"), "vital layers: layer 99 is out of range"),
           (dict(vital_layers="x"), "vital layers must be comma-separated integers"),
           (dict(duration_s=1000.0), "duration_s"),
           (dict(duration_s=-2.0), "duration_s"),
           (dict(method="flowedit"), "method flowedit edits a recording without inverting it"),
           (dict(method="sdedit", sdedit_level=1.5, audio=silent), "SDEdit level must be from 0 to 1"),
           (dict(regions="3-4"), "regions: '3-4' is not START,END")]
  for kwargs, expected in cases:
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
      edit(c, "piano", "guitar", **kwargs)
    message = str(caught.value)
    assert expected in message and "\n" not in message and "Traceback" not in message, message
  assert Path(edit(c, "piano", "guitar", seed=9)[1]).is_file()  # and it still edits


def _status(url, auth=None) -> int:
  request = urllib.request.Request(url)
  try:
    return urllib.request.urlopen(request, timeout=10).status
  except urllib.error.HTTPError as e:
    return e.code


def test_login_and_no_file_outside_the_output_folder(studio, tiny44k):
  with pytest.raises(Exception, match="(?i)login|auth|401|credentials"):
    gradio_client.Client(studio.url, verbose=False)
  for path in ("/etc/passwd", str(Path(__file__).resolve()), str(tiny44k.path / "musickv_checkpoint.json")):
    assert _status(f"{studio.url}gradio_api/file={path}") in (401, 403, 404), path


# ----------------------------------------------------------------------------- the file guard itself
# The test above never reaches the guard: it sends no login to a server that asks for one, so every
# path is 401. These reach it: a server without --auth, and a logged-in client of one with --auth.


@pytest.fixture(scope="module")
def open_studio(tiny44k, tmp_path_factory):
  """A second server, without --auth."""
  root = tmp_path_factory.mktemp("open-studio")
  server = studio_server.start(tiny44k.path, root / "out")
  yield server
  server.stop()


def browser(server, auth=None) -> urllib.request.OpenerDirector:
  """An HTTP client of the server with its own cookies, logged in (gradio's /login form) if auth."""
  opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
  if auth is not None:
    form = urllib.parse.urlencode({"username": auth[0], "password": auth[1]}).encode()
    with opener.open(urllib.request.Request(f"{server.url}login", data=form), timeout=30) as answer:
      assert answer.status == 200 and json.loads(answer.read())["success"] is True
  return opener


def fetch_status(opener, url: str) -> int:
  try:
    with opener.open(url, timeout=30) as answer:
      return answer.status
  except urllib.error.HTTPError as e:
    return e.code


def outside_files(server, model: Path) -> list[str]:
  """Files outside the server's --output_path, as a client would spell them: absolute, relative to
  the server's working directory (the repository), through the output folder with `..`, and with
  every '/' written %2F."""
  repo_file = Path(__file__).resolve()
  out = server.output.resolve()
  up = "/".join([".."] * len(out.parts[1:]))  # from the output folder to /
  spelled = [str(repo_file), str(model / "musickv_checkpoint.json"), "/etc/passwd",
             str(repo_file.relative_to(studio_server.REPO)), "pyproject.toml",
             f"{out}/{up}{repo_file}", f"{out}/{up}/etc/passwd", f"{out}/.gradio/{up}/etc/passwd",
             f"{out}/../{out.name}/../../../../../../../../etc/passwd"]
  return spelled + [urllib.parse.quote(path, safe="") for path in spelled]


def _served_inside(server) -> str:
  """A file the server itself serves (one it copied into its own folder for a client)."""
  served = [p for p in (server.output / ".gradio").rglob("*") if p.is_file()]
  assert served, "the server has served nothing yet"
  return str(served[0])


def test_no_file_outside_the_output_folder_without_auth(open_studio, tiny44k, tmp_path):
  c = gradio_client.Client(open_studio.url, download_files=str(tmp_path / "downloads"), verbose=False)
  edit(c, "piano", "guitar", seed=5)  # something of its own to serve: the guard is reached and lets it through
  opener = browser(open_studio)
  assert fetch_status(opener, f"{open_studio.url}gradio_api/file={_served_inside(open_studio)}") == 200
  served = {path: fetch_status(opener, f"{open_studio.url}gradio_api/file={path}")
            for path in outside_files(open_studio, tiny44k.path)}
  leaks = {path: status for path, status in served.items() if status not in (403, 404)}
  assert not leaks, f"{len(leaks)} of {len(served)} outside paths answered: {leaks}"


def test_no_file_outside_the_output_folder_for_a_logged_in_client(studio, tiny44k, tmp_path):
  edit(client(studio, tmp_path), "piano", "guitar", seed=6)
  opener = browser(studio, AUTH)
  assert fetch_status(opener, studio.url) == 200  # logged in: the page, not 401
  assert fetch_status(opener, f"{studio.url}gradio_api/file={_served_inside(studio)}") == 200
  served = {path: fetch_status(opener, f"{studio.url}gradio_api/file={path}")
            for path in outside_files(studio, tiny44k.path)}
  leaks = {path: status for path, status in served.items() if status not in (403, 404)}
  assert not leaks, f"{len(leaks)} of {len(served)} outside paths answered: {leaks}"


def test_ctrl_c_stops_in_one_line_and_leaves_no_temporary(studio):
  status, log = studio.stop()
  lines = log.strip().splitlines()
  assert status == 130 and lines[-1] == "musickv-studio stopped", log[-2000:]
  assert "Traceback" not in log
  assert not (studio.output / ".gradio").exists()
  left = [p for p in studio.output.rglob("*") if ".partial-" in p.name]
  assert not left, left
  folders = [p for p in studio.output.iterdir()]
  assert folders and all((p / "edit.json").is_file() or (p / "compare.json").is_file() for p in folders), folders
  assert any((p / "compare.json").is_file() for p in folders)
