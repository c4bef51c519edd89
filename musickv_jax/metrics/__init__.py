"""Music metrics: melody, harmony, form and rhythm kept, and timbre moved (musickv_jax.metrics.music),
on features that agree with librosa (musickv_jax.metrics.features), plus the interface for learned
scorers such as CLAP (musickv_jax.metrics.scorers)."""

from musickv_jax.metrics.features import Analysis
from musickv_jax.metrics.music import METRICS, compare, compare_jit, structure_similarity

__all__ = ["Analysis", "METRICS", "compare", "compare_jit", "structure_similarity"]
