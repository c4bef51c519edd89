"""The user-facing Python API: text (and recordings) in, audio out.

  from musickv_jax import load_model, pipeline
  model = load_model("ckpt/sao")
  result = pipeline.generate(model, pipeline.GenerationSettings(prompts=("Piano solo",), audio_end_in_s=10))
  result.audio  # (n_prompts, channels, samples) float32 at result.sample_rate

  pipeline.edit(model, pipeline.EditSettings(...))                  # MusicKV edit of a generated source
  inv = pipeline.invert_audio(model, audio, pipeline.InversionSettings("clean indie guitar"))
  pipeline.edit_recording(model, inv, pipeline.EditSettings(...))  # MusicKV edit of a recording
  pipeline.edit_audio(model, audio, pipeline.EditSettings(...), pipeline.InversionSettings(...))  # both

A recording longer than the model's window is inverted and edited over overlapping windows as
one diffusion process (pipeline.long_recording; `windows=pipeline.WindowSettings(...)` sets them).
Every run is planned by `build_plan` (pipeline.plan): docs/architecture.md has the map.

Every function validates its settings first and raises musickv_jax.errors.SettingsError (with
the offending field) before any work is done.
"""

from musickv_jax.pipeline.common import (
                                         check_init_latents,
                                         initial_latents,
                                         latent_frames,
                                         output_span,
                                         shared_initial_latents,
                                         step_plan,
)
from musickv_jax.pipeline.conditioning import guided_conditioning, text_conditioning
from musickv_jax.pipeline.editing import edit
from musickv_jax.pipeline.generation import generate
from musickv_jax.pipeline.plan import EditPlan, PlanRow, build_plan
from musickv_jax.pipeline.recording import (
                                         check_edit,
                                         check_inversion,
                                         edit_audio,
                                         edit_recording,
                                         encode_audio,
                                         invert_audio,
                                         invert_latents,
                                         load_inversion,
)
from musickv_jax.pipeline.results import SOURCE_GUIDANCE, EditResult, Generation, Inversion
from musickv_jax.pipeline.settings import (
                                         DEFAULT_OVERLAP_S,
                                         REFERENCE_VITAL_LAYERS,
                                         EditSettings,
                                         GenerationSettings,
                                         InversionSettings,
                                         WindowSettings,
)

__all__ = [
    "DEFAULT_OVERLAP_S", "EditPlan", "EditResult", "EditSettings", "Generation", "GenerationSettings", "Inversion",
    "InversionSettings", "PlanRow", "REFERENCE_VITAL_LAYERS", "SOURCE_GUIDANCE", "WindowSettings", "build_plan",
    "check_edit", "check_init_latents", "check_inversion", "edit", "edit_audio", "edit_recording", "encode_audio",
    "generate", "guided_conditioning", "initial_latents", "invert_audio", "invert_latents", "latent_frames",
    "load_inversion", "output_span", "shared_initial_latents", "step_plan", "text_conditioning",
]
