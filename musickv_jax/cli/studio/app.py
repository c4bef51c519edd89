"""The studio's page and API, in gradio. Every edit goes to Studio.edit and every comparison to
Studio.compare (service.py); this module only lays out controls and maps them to a StudioRequest.

The page: an edit tab (prompts, a recording or a generated source, how a recording is edited --
method inversion, flowedit or sdedit at an SDEdit level -- and its regions, preset, schedule, steps,
guidance, seed) and a compare tab (one recording, several methods side by side: musickv-compare).

API (gradio_client):
  Client(url).predict(source_prompt=..., edit_prompt=..., audio=handle_file(path) or None,
      num_inference_steps=..., guidance_scale=..., seed=..., duration_s=..., vital_layers="",
      method="inversion", sdedit_level=0.6, regions="", api_name="/edit")
    -> (source_audio, edit_audio, spectrogram, record): the source (a recording's reconstruction) and
       the edit as WAV files, spectrograms.png and edit.json. method: inversion, flowedit or sdedit
       (flowedit and sdedit need a recording); sdedit_level: sdedit's level, from 0 (the recording)
       to 1 (noise), ignored by the other methods; regions: "START,END; START,END" seconds, only those
       spans follow the edit ("": the whole clip).
  Client(url).predict(source_prompt=..., edit_prompt=..., audio=handle_file(path),
      methods="inversion,flowedit,sdedit:0.5,sdedit:0.8", without_injection=True,
      num_inference_steps=..., guidance_scale=..., seed=..., vital_layers="", api_name="/compare")
    -> (record, plot, files): compare.json (every variant's settings, metrics, DiT rows), the
       fidelity-editability plot (PNG) and every file of the comparison (index.html, input.wav and
       one <variant>.wav per variant that finished)."""

from __future__ import annotations

import time

import gradio as gr

from musickv_jax.errors import MusicKVError
from musickv_jax.jobs import Cancelled
from musickv_jax.jobs import compare as compare_lib
from musickv_jax.pipeline import presets
from musickv_jax.pipeline.settings import METHODS
from musickv_jax.pipeline.variation import DEFAULT_NOISE_LEVEL
from musickv_jax.studio.request import REGIONS_FORMAT, RequestError
from musickv_jax.studio.request import StudioRequest as EditRequest
from musickv_jax.studio.service import CompareOutcome, EditOutcome, Studio

MAX_EDITS = 4  # edit prompts (and players) per request in the page
MAX_VARIANTS = 12  # a comparison's players in the page (methods x with / without injection)
AUDIO_TYPES = [".wav", ".flac", ".mp3", ".ogg"]
OWN_PRESET = "(the model's own)"
PRESET_SCHEDULE = "(the preset's)"
EDITS = "studio-edits"  # the concurrency group of the page's and the API's edits: queued together
HISTORY_HEADERS = ["#", "time", "model", "recording", "method", "regions", "source prompt", "edit prompts", "steps",
                   "guidance", "seed", "vital layers", "schedule", "result"]
METHOD_LABEL = ("method (with a recording): inversion inverts it, then regenerates; flowedit and sdedit edit it "
                "without inverting")
SDEDIT_LABEL = "SDEdit level (method sdedit: 0 keeps the recording, 1 starts from noise)"
REGIONS_LABEL = f"regions: only these spans follow the edit, {REGIONS_FORMAT}; empty: the whole clip"


def _number(value, kind=float):
  return None if value is None or value == "" else kind(value)


def _level(method, sdedit_level) -> float | None:
  """The SDEdit level asked: only method sdedit reads the control."""
  return _number(sdedit_level) if method == "sdedit" else None


def _page_request(source_prompt, edit_prompts, audio, start_s, duration_s, method, sdedit_level, regions, preset,
                  vital_layers, schedule, strength, window_start, window_end, steps, guidance, seed) -> EditRequest:
  edits = tuple(line for line in (edit_prompts or "").splitlines() if line.strip())
  if len(edits) > MAX_EDITS:
    raise RequestError(f"at most {MAX_EDITS} edit prompts at once in the page, got {len(edits)}")
  schedule = None if schedule in (None, PRESET_SCHEDULE) else schedule
  return EditRequest(
      source_prompt=source_prompt or "", edit_prompts=edits, audio=audio or None, start_s=_number(start_s) or 0.0,
      duration_s=_number(duration_s), num_inference_steps=_number(steps, int), guidance_scale=_number(guidance),
      seed=_number(seed, int) or 0, vital_layers=vital_layers or "",
      preset=None if preset in (None, OWN_PRESET) else preset, schedule=schedule,
      strength=_number(strength) if schedule in ("constant", "window") else None,
      window=(float(window_start), float(window_end)) if schedule == "window" else None,
      method=method or "inversion", init_noise_level=_level(method, sdedit_level), regions=regions or "")


def _history_row(number: int, model: str, request: EditRequest, outcome: EditOutcome) -> list:
  level = f" {request.init_noise_level:g}" if request.init_noise_level is not None else ""
  return [number, time.strftime("%H:%M:%S"), model, "yes" if request.audio else "", f"{request.method}{level}",
          request.regions, request.source_prompt, " | ".join(request.edit_prompts), request.num_inference_steps,
          request.guidance_scale, request.seed, request.vital_layers, request.schedule or "", outcome.folder.name]


def _compare_request(source_prompt, edit_prompt, audio, methods, without_injection, steps, guidance, seed,
                     vital_layers="") -> EditRequest:
  """The compare tab's (and /compare's) request: one edit prompt; the methods go to Studio.compare."""
  return EditRequest(source_prompt=source_prompt or "", edit_prompts=(edit_prompt or "",), audio=audio or None,
                     num_inference_steps=_number(steps, int), guidance_scale=_number(guidance),
                     seed=_number(seed, int) or 0, vital_layers=vital_layers or "")


def _check_players(methods: str, without_injection: bool) -> None:
  """The page has MAX_VARIANTS players; a text compare refuses is left to Studio.compare's message."""
  try:
    count = len(compare_lib.methods_from_text(methods or "", without_injection=bool(without_injection)))
  except MusicKVError:
    return
  if count > MAX_VARIANTS:
    raise RequestError(f"methods asks for {count} edits; the page shows at most {MAX_VARIANTS} (fewer methods, or "
                       "without injection unchecked)")


def build(studio: Studio) -> gr.Blocks:
  names = studio.model_names
  first = studio.defaults(names[0])
  with gr.Blocks(title="musickv-studio", analytics_enabled=False) as page:
    gr.Markdown("## musickv-studio: MusicKV editing\nDescribe the source (with a recording: describe the "
                "recording as it is), give the edit, press **Edit**. Melody, rhythm and form follow the source; "
                "timbre, genre and mood follow the edit.")
    history = gr.State([])
    model = gr.Dropdown(names, value=names[0], label="model", visible=len(names) > 1, elem_id="model")
    with gr.Tab("edit", id="edit_tab", elem_id="edit_tab"):
      with gr.Row():
        with gr.Column(scale=1):
          source_prompt = gr.Textbox(label="source prompt", placeholder="Piano solo", elem_id="source_prompt")
          edit_prompts = gr.Textbox(label=f"edit prompt (up to {MAX_EDITS}, one a line)", lines=2,
                                    placeholder="Acoustic guitar, country, soft", elem_id="edit_prompt")
          audio = gr.File(label="recording to edit (WAV, FLAC, MP3, OGG); leave empty to generate the source",
                          file_types=AUDIO_TYPES, type="filepath", elem_id="audio")
          recording_info = gr.Markdown(elem_id="recording_info")
          method = gr.Radio(list(METHODS), value="inversion", label=METHOD_LABEL, elem_id="method")
          sdedit_level = gr.Slider(0.0, 1.0, DEFAULT_NOISE_LEVEL, step=0.05, label=SDEDIT_LABEL, elem_id="sdedit_level")
          regions = gr.Textbox("", label=REGIONS_LABEL, placeholder="4,7; 20,24", elem_id="regions")
          with gr.Row():
            start_s = gr.Number(0.0, label="recording: segment start (s)", elem_id="start_s")
            duration_s = gr.Number(first.duration_s, label="duration (s); a recording's segment, 0: to its end",
                                   elem_id="duration_s")
          with gr.Accordion("settings", open=True):
            with gr.Row():
              steps = gr.Number(first.num_inference_steps, precision=0, label="steps", elem_id="steps")
              guidance = gr.Number(first.guidance_scale, label="guidance", elem_id="guidance")
              seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
            preset = gr.Dropdown([OWN_PRESET, *presets.available()], value=OWN_PRESET, label="preset")
            vital_layers = gr.Textbox(first.vital_layers, label="vital layers (comma-separated; empty: the preset's)",
                                      elem_id="vital_layers")
            schedule = gr.Radio([PRESET_SCHEDULE, "linear_ramp", "constant", "window"], value=PRESET_SCHEDULE,
                                label="injection schedule")
            strength = gr.Slider(0.0, 1.0, 1.0, step=0.05, label="strength (constant, window)")
            with gr.Row():
              window_start = gr.Slider(0.0, 1.0, 0.0, step=0.05, label="window start (fraction of the steps)")
              window_end = gr.Slider(0.0, 1.0, 1.0, step=0.05, label="window end")
          with gr.Row():
            edit_button = gr.Button("Edit", variant="primary", elem_id="edit_button")
            cancel_button = gr.Button("Cancel", elem_id="cancel_button")
          status = gr.Markdown(elem_id="status")
        with gr.Column(scale=1):
          input_player = gr.Audio(label="input (the recording as the model hears it)", interactive=False,
                                  elem_id="input_player")
          source_player = gr.Audio(label="source (a recording: its reconstruction)", interactive=False,
                                   elem_id="source_player")
          edit_players = [gr.Audio(label=f"edit {i + 1}", interactive=False, visible=i == 0, elem_id=f"edit_player_{i}")
                          for i in range(MAX_EDITS)]
          spectrogram = gr.Image(label="spectrograms", type="filepath", interactive=False, elem_id="spectrogram")
          metrics = gr.Dataframe(label="music metrics against the source (musickv-evaluate)", interactive=False,
                                 elem_id="metrics")
          downloads = gr.File(label="download: WAVs, edit.json, spectrograms", file_count="multiple",
                              interactive=False, elem_id="downloads")
      history_table = gr.Dataframe(headers=HISTORY_HEADERS, label="history (select a row to load its settings and "
                                   "results; press Edit to run it again)", interactive=False, elem_id="history")

    controls = [source_prompt, edit_prompts, audio, start_s, duration_s, method, sdedit_level, regions, preset,
                vital_layers, schedule, strength, window_start, window_end, steps, guidance, seed]
    results = [input_player, source_player, *edit_players, spectrogram, metrics, downloads]

    def show(outcome: EditOutcome) -> list:
      edits = list(outcome.edit_wavs)
      players = [gr.update(value=str(edits[i]) if i < len(edits) else None, visible=i < max(1, len(edits)))
                 for i in range(MAX_EDITS)]
      header = ["clip", *(f"{n} {'↑' if up else '↓'}" for n, up in zip(outcome.metrics.names,
                                                                        outcome.metrics.higher_is_better))]
      return [str(outcome.input_wav) if outcome.input_wav else None, str(outcome.source_wav), *players,
              str(outcome.spectrogram), gr.update(value=outcome.metrics.table(), headers=header),
              [str(p) for p in outcome.files]]

    def edit_in_page(model_name, source_prompt, edit_prompts, audio, start_s, duration_s, method, sdedit_level, regions,
                     preset, vital_layers, schedule, strength, window_start, window_end, steps, guidance, seed, past,
                     request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio's way to ask for a progress bar)
      # explicit parameters: gradio passes the request only to a function without *args
      values = [source_prompt, edit_prompts, audio, start_s, duration_s, method, sdedit_level, regions, preset,
                vital_layers, schedule, strength, window_start, window_end, steps, guidance, seed]
      unchanged = [gr.update() for _ in results]
      try:
        edit_request = _page_request(*values)
        outcome = studio.edit(edit_request, model_name, session=request.session_hash,
                              progress=lambda fraction, what: progress(fraction, desc=what))
      except RequestError as e:
        return [*unchanged, f"**error:** {e}", past, gr.update()]
      except Cancelled:
        return [*unchanged, "cancelled", past, gr.update()]
      past = [*past, {"model": model_name, "values": list(values), "outcome": outcome,
                      "row": _history_row(len(past) + 1, model_name, edit_request, outcome)}]
      return [*show(outcome), outcome.summary(), past, [entry["row"] for entry in past]]

    edit_event = edit_button.click(edit_in_page, [model, *controls, history], [*results, status, history,
                                                                                history_table],
                                   concurrency_limit=8, concurrency_id=EDITS, api_visibility="private")
    def cancel(request: gr.Request) -> str:
      return f"cancelled {studio.cancel(request.session_hash)} request(s)"
    cancel_button.click(cancel, None, status, cancels=[edit_event], queue=False, api_visibility="private")

    audio.change(_check_upload(studio), [audio, model], recording_info, api_visibility="private")

    with gr.Tab("compare", id="compare_tab", elem_id="compare_tab"):
      compare_steps, compare_guidance = _compare_tab(studio, first, model)

    def pick_model(model_name):
      d = studio.defaults(model_name)
      return d.num_inference_steps, d.guidance_scale, d.duration_s, d.vital_layers, d.num_inference_steps, \
          d.guidance_scale
    model.change(pick_model, model, [steps, guidance, duration_s, vital_layers, compare_steps, compare_guidance],
                 api_visibility="private")

    def load_entry(past, event: gr.SelectData):
      entry = past[event.index[0]]
      return [gr.update(value=entry["model"]), *entry["values"], *show(entry["outcome"]),
              f"loaded history entry {event.index[0] + 1}: press Edit to run it again"]
    history_table.select(load_entry, history, [model, *controls, *results, status], api_visibility="private")

    _api(studio, first)
    _compare_api(studio, first)
  return page


def _check_upload(studio: Studio):
  def check_upload(path, model_name):
    if not path:
      return ""
    try:
      return studio.check_recording(path, model_name)
    except RequestError as e:
      return f"**error:** {e}"
  return check_upload


def _compare_tab(studio: Studio, first, model: gr.Dropdown) -> tuple[gr.Number, gr.Number]:
  """Several methods on one recording (Studio.compare): a player per variant, the plot, the metrics,
  the files. Returns its steps and guidance controls (the model's choice sets them)."""
  gr.Markdown("Edit one recording several ways and compare them: each method with KV injection and, if asked, "
              "without it. Up is more of the melody kept, right is more of the timbre changed.")
  with gr.Row():
    with gr.Column(scale=1):
      audio = gr.File(label="recording (WAV, FLAC, MP3, OGG)", file_types=AUDIO_TYPES, type="filepath",
                      elem_id="compare_audio")
      recording_info = gr.Markdown(elem_id="compare_recording_info")
      source_prompt = gr.Textbox(label="source prompt (the recording as it is)", placeholder="Clean indie guitar",
                                 elem_id="compare_source_prompt")
      edit_prompt = gr.Textbox(label="edit prompt", placeholder="Classical piano solo", elem_id="compare_edit_prompt")
      methods = gr.Textbox(compare_lib.DEFAULT_METHODS, label="methods (comma-separated: inversion, flowedit, sdedit "
                           "or sdedit:LEVEL)", elem_id="compare_methods")
      without_injection = gr.Checkbox(True, label="also without injection (each method with KV injection weight 0)",
                                      elem_id="compare_without_injection")
      with gr.Row():
        steps = gr.Number(first.num_inference_steps, precision=0, label="steps", elem_id="compare_steps")
        guidance = gr.Number(first.guidance_scale, label="guidance", elem_id="compare_guidance")
        seed = gr.Number(0, precision=0, label="seed", elem_id="compare_seed")
      with gr.Row():
        compare_button = gr.Button("Compare", variant="primary", elem_id="compare_button")
        cancel_button = gr.Button("Cancel", elem_id="compare_cancel_button")
      status = gr.Markdown(elem_id="compare_status")
    with gr.Column(scale=1):
      input_player = gr.Audio(label="input (the recording as the model hears it)", interactive=False,
                              elem_id="compare_input_player")
      players = [gr.Audio(label=f"variant {i + 1}", interactive=False, visible=False, elem_id=f"compare_player_{i}")
                 for i in range(MAX_VARIANTS)]
      plot = gr.Image(label="fidelity against editability (melody kept against timbre moved)", type="filepath",
                      interactive=False, elem_id="compare_plot")
      metrics = gr.Dataframe(label="each variant against the recording (musickv-evaluate's metrics)",
                             interactive=False, elem_id="compare_metrics")
      downloads = gr.File(label="download: compare.json, index.html, WAVs", file_count="multiple", interactive=False,
                          elem_id="compare_downloads")
  results = [input_player, *players, plot, metrics, downloads]

  def show(outcome: CompareOutcome) -> list:
    shown = list(outcome.variants)
    updates = []
    for i in range(MAX_VARIANTS):
      label, wav = shown[i] if i < len(shown) else (f"variant {i + 1}", None)
      failed = i < len(shown) and wav is None
      updates.append(gr.update(value=str(wav) if wav else None, label=f"{label} (failed)" if failed else label,
                               visible=i < len(shown)))
    return [str(outcome.input_wav), *updates, str(outcome.plot),
            gr.update(value=outcome.table(), headers=outcome.headers()), [str(p) for p in outcome.files]]

  def compare_in_page(model_name, audio, source_prompt, edit_prompt, methods, without_injection, steps, guidance,
                      seed, request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio's progress bar)
    unchanged = [gr.update() for _ in results]
    try:
      _check_players(methods, without_injection)
      outcome = studio.compare(_compare_request(source_prompt, edit_prompt, audio, methods, without_injection, steps,
                                                guidance, seed), methods or "",
                               without_injection=bool(without_injection), model_name=model_name,
                               session=request.session_hash,
                               progress=lambda fraction, what: progress(fraction, desc=what))
    except RequestError as e:
      return [*unchanged, f"**error:** {e}"]
    except Cancelled:
      return [*unchanged, "cancelled"]
    return [*show(outcome), outcome.summary()]

  event = compare_button.click(compare_in_page, [model, audio, source_prompt, edit_prompt, methods, without_injection,
                                                 steps, guidance, seed], [*results, status],
                               concurrency_limit=8, concurrency_id=EDITS, api_visibility="private")

  def cancel(request: gr.Request) -> str:
    return f"cancelled {studio.cancel(request.session_hash)} request(s)"
  cancel_button.click(cancel, None, status, cancels=[event], queue=False, api_visibility="private")
  audio.change(_check_upload(studio), [audio, model], recording_info, api_visibility="private")
  return steps, guidance


def _api(studio: Studio, first) -> None:
  """The API endpoint /edit (hidden from the page): the contract of the README."""
  with gr.Row(visible=False):
    inputs = [gr.Textbox(label="source_prompt"), gr.Textbox(label="edit_prompt"), gr.File(label="audio", type="filepath"),
              gr.Number(first.num_inference_steps, precision=0, label="num_inference_steps"),
              gr.Number(first.guidance_scale, label="guidance_scale"), gr.Number(0, precision=0, label="seed"),
              gr.Number(first.duration_s, label="duration_s"), gr.Textbox("", label="vital_layers"),
              gr.Textbox("inversion", label="method"), gr.Number(DEFAULT_NOISE_LEVEL, label="sdedit_level"),
              gr.Textbox("", label="regions")]
    outputs = [gr.File(label=name) for name in ("source_audio", "edit_audio", "spectrogram", "record")]
    button = gr.Button(visible=False)

  def edit(source_prompt: str, edit_prompt: str, audio: str | None, num_inference_steps: int, guidance_scale: float,
           seed: int, duration_s: float, vital_layers: str, method: str, sdedit_level: float, regions: str,
           request: gr.Request, progress=gr.Progress()):  # noqa: B008 (gradio's way to ask for a progress bar)
    edit_request = EditRequest(source_prompt=source_prompt or "", edit_prompts=(edit_prompt or "",),
                               audio=audio or None, duration_s=_number(duration_s),
                               num_inference_steps=_number(num_inference_steps, int),
                               guidance_scale=_number(guidance_scale), seed=_number(seed, int) or 0,
                               vital_layers=vital_layers or "", method=method or "inversion",
                               init_noise_level=_level(method, sdedit_level), regions=regions or "")
    try:
      outcome = studio.edit(edit_request, session=request.session_hash,
                            progress=lambda fraction, what: progress(fraction, desc=what))
    except (RequestError, Cancelled) as e:
      raise gr.Error(str(e) or "cancelled", print_exception=False) from None
    return str(outcome.source_wav), str(outcome.edit_wavs[0]), str(outcome.spectrogram), str(outcome.record)

  button.click(edit, inputs, outputs, api_name="edit", concurrency_limit=8, concurrency_id=EDITS)


def _compare_api(studio: Studio, first) -> None:
  """The API endpoint /compare (hidden from the page): the contract of the README."""
  with gr.Row(visible=False):
    inputs = [gr.Textbox(label="source_prompt"), gr.Textbox(label="edit_prompt"),
              gr.File(label="audio", type="filepath"), gr.Textbox(compare_lib.DEFAULT_METHODS, label="methods"),
              gr.Checkbox(True, label="without_injection"),
              gr.Number(first.num_inference_steps, precision=0, label="num_inference_steps"),
              gr.Number(first.guidance_scale, label="guidance_scale"), gr.Number(0, precision=0, label="seed"),
              gr.Textbox("", label="vital_layers")]
    outputs = [gr.File(label="record"), gr.File(label="plot"), gr.File(label="files", file_count="multiple")]
    button = gr.Button(visible=False)

  def compare(source_prompt: str, edit_prompt: str, audio: str | None, methods: str, without_injection: bool,
              num_inference_steps: int, guidance_scale: float, seed: int, vital_layers: str, request: gr.Request,
              progress=gr.Progress()):  # noqa: B008 (gradio's way to ask for a progress bar)
    asked = _compare_request(source_prompt, edit_prompt, audio, methods, without_injection, num_inference_steps,
                             guidance_scale, seed, vital_layers)
    try:
      outcome = studio.compare(asked, methods or "", without_injection=bool(without_injection),
                               session=request.session_hash,
                               progress=lambda fraction, what: progress(fraction, desc=what))
    except (RequestError, Cancelled) as e:
      raise gr.Error(str(e) or "cancelled", print_exception=False) from None
    return str(outcome.record), str(outcome.plot), [str(p) for p in outcome.files]

  button.click(compare, inputs, outputs, api_name="compare", concurrency_limit=8, concurrency_id=EDITS)
