"""musickv-compare's folder: the recording as the model heard it (input.wav), one WAV per variant
(<label>.wav: the edit), compare.json (every variant's method, settings, metrics and cost), the
fidelity-editability plot (fidelity_editability.png: melody kept against timbre moved, one point per
variant) and index.html, a listening page with the players side by side and the plot."""

from __future__ import annotations

import html

from collections.abc import Sequence

import numpy as np

from musickv_jax.audio import save_wav
from musickv_jax.writers.charts import fidelity_editability_chart
from musickv_jax.writers.listening import STYLE
from musickv_jax.writers.sets import OutputSet, write_json
TABLE_METRICS = (("f0_chroma_accuracy", "melody"), ("cqt1_pcc", "CQT1-PCC"), ("chroma_cosine", "harmony"),
                 ("form_ssm_correlation", "form"), ("onset_correlation", "rhythm"), ("timbre_distance", "timbre moved"))


def stage_comparison(outputs: OutputSet, record: dict, recording: np.ndarray, sample_rate: int,
                     clips: Sequence[tuple[str, np.ndarray]], *, wav_subtype: str = "FLOAT") -> None:
  """Stages a comparison's files in `outputs` (the caller commits): record (jobs.compare's
  compare_record), the recording as heard, and each variant's (file name, audio)."""
  save_wav(outputs.path(record["recording"]["file"]), recording, sample_rate, wav_subtype)
  for name, audio in clips:
    save_wav(outputs.path(name), audio, sample_rate, wav_subtype)
  plot = record["plot"]
  points = [(point["label"], point["x"], point["y"]) for point in plot["points"]]
  fidelity_editability_chart(outputs.path(plot["file"]), points, x_label=f"timbre moved ({plot['x']})",
                             y_label=f"melody kept ({plot['y']})",
                             title=f"{record['prompts'][0]} -> {record['prompts'][1]}")
  write_json(outputs.path("compare.json"), record)
  outputs.path("index.html").write_text(render_page(record))


def render_page(record: dict) -> str:
  title = f"{record['prompts'][0]} -> {record['prompts'][1]}"
  header = "".join(f"<th>{html.escape(label)}</th>" for _, label in TABLE_METRICS)
  lines = [f'<tr><td>input</td><td>(the recording)</td><td><audio controls preload="none" src="input.wav">'
           f"</audio></td>{'<td></td>' * len(TABLE_METRICS)}<td></td></tr>"]
  for row in record["rows"]:
    label = html.escape(row["label"])
    if row["error"]:
      lines.append(f'<tr><td>{label}</td><td class="failed" colspan="{len(TABLE_METRICS) + 3}">failed: '
                   f"{html.escape(row['error'])}</td></tr>")
      continue
    values = "".join(f"<td>{row['metrics'][name]:.3f}</td>" for name, _ in TABLE_METRICS)
    injection = "with KV injection" if row["injection"] else "without injection"
    lines.append(f"<tr><td>{label}</td><td>{html.escape(injection)}</td><td><audio controls preload=\"none\" "
                 f'src="{html.escape(row["file"], quote=True)}"></audio></td>{values}<td>{row["dit_calls"]}</td></tr>')
  table = (f"<table><tr><th>method</th><th></th><th>listen</th>{header}<th>DiT rows</th></tr>\n"
           + "\n".join(lines) + "</table>")
  legend = ("Each edit scored against the recording: melody, harmony, form and rhythm kept (1 is identical), "
            "timbre moved (0 is unchanged). The plot shows the trade-off: up is more of the melody kept, right is "
            "more of the timbre changed.")
  return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
          f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
          f'<p class="note">{html.escape(legend)}</p>\n{table}\n'
          f'<img src="{html.escape(record["plot"]["file"], quote=True)}" alt="fidelity against editability, one point per method">\n</body></html>\n')
