"""The user-facing Python API: text (and recordings) in, audio out.

  from musickv_jax import load_model, pipeline
  model = load_model("ckpt/sao")
  result = pipeline.generate(model, pipeline.GenerationSettings(prompts=("Piano solo",), audio_end_in_s=10))
  result.audio  # (n_prompts, channels, samples) float32 at result.sample_rate

  pipeline.edit(model, pipeline.EditSettings(...))                  # MusicKV edit of a generated source
  inv = pipeline.invert_audio(model, audio, pipeline.InversionSettings("clean indie guitar"))
  pipeline.edit_recording(model, inv, pipeline.EditSettings(...))  # MusicKV edit of a recording

A recording longer than the model's window is inverted and edited over overlapping windows as
one diffusion process (pipeline.long_recording; `windows=pipeline.WindowSettings(...)` sets them).

Every function validates its settings first and raises musickv_jax.errors.SettingsError (with
the offending field) before any work is done.
"""

from musickv_jax.pipeline.common import (check_init_latents, initial_latents, latent_frames, output_span,
                                         shared_initial_latents, step_plan)
from musickv_jax.pipeline.conditioning import guided_conditioning, text_conditioning
from musickv_jax.pipeline.editing import EditResult, edit
from musickv_jax.pipeline.generation import Generation, generate
from musickv_jax.pipeline.recording import (SOURCE_GUIDANCE, Inversion, edit_recording, encode_audio, invert_audio,
                                            invert_latents, load_inversion, recording_guidance)
from musickv_jax.pipeline.long_recording import DEFAULT_OVERLAP_S, WindowSettings
from musickv_jax.pipeline.settings import (REFERENCE_VITAL_LAYERS, EditSettings, GenerationSettings,
                                           InversionSettings)

__all__ = [
    "DEFAULT_OVERLAP_S", "EditResult", "EditSettings", "Generation", "GenerationSettings", "Inversion", "InversionSettings",
    "REFERENCE_VITAL_LAYERS", "SOURCE_GUIDANCE", "check_init_latents", "edit", "edit_recording", "encode_audio", "generate",
    "guided_conditioning", "initial_latents", "invert_audio", "invert_latents", "latent_frames", "load_inversion",
    "output_span", "recording_guidance", "shared_initial_latents", "step_plan", "text_conditioning", "WindowSettings",
]
