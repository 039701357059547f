"""The sampler every part uses: settings (``SamplingSettings``), the denoising chain over any
eps-model and one-step generators (``chain``), classifier-free guidance (``guidance``), latent
decoding (``latents``) and progress bars (``progress``). Teachers, students, methods, the engine's
previews and the exported pipeline all sample through here; ``dkdm_zoo.generation`` turns a
teacher name or a run folder into images with it."""
