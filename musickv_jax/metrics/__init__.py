"""Music metrics: melody, harmony, form and rhythm kept, and timbre and spectrum moved
(musickv_jax.metrics.music, the table of them), with the harmonic-summation pitch
(musickv_jax.metrics.pitch) and the spectral-envelope distributions (musickv_jax.metrics.timbre),
on features that agree with librosa (musickv_jax.metrics.features), plus the interface for learned
scorers such as CLAP (musickv_jax.metrics.scorers)."""

from musickv_jax.metrics.features import Analysis
from musickv_jax.metrics.music import METRICS, compare, compare_jit, structure_similarity

__all__ = ["Analysis", "METRICS", "compare", "compare_jit", "structure_similarity"]
