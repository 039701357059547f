"""Tiny teacher specs, one per family a student must handle (or refuse with IncompatibleError)."""

from __future__ import annotations

from dkdm_zoo.spec import TeacherSpec

TINY_SPECS: dict[str, TeacherSpec] = {
    "pixel-uncond": TeacherSpec(sample_shape=(1, 8, 8), family="digits"),
    "pixel-class-learned": TeacherSpec(
        sample_shape=(1, 16, 16), conditioning="class", num_classes=10, variance_type="learned_range"
    ),
    "latent-class": TeacherSpec(sample_shape=(4, 8, 8), space="latent", conditioning="class", num_classes=5),
    "text-latent": TeacherSpec(
        sample_shape=(4, 8, 8), space="latent", conditioning="text", text_embed_dim=32, text_seq_len=8
    ),
}

# Which (student, family) pairs must be refused with IncompatibleError; every other pair must work.
# A student registered without an entry here fails the suite until its support is stated.
UNSUPPORTED: dict[str, set[str]] = {
    "unet": set(),
    "dit": set(),
    "convnext": {"text-latent"},
    "uvit": set(),
}
