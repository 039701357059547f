"""Images from a SOURCE: a registered teacher (NAME, FAMILY@PATH, a folder or hub id) or a run folder
(``sources``: ``load_source(...).generate(n, SamplingSettings(...))``), and PNG files of them
(``images``). `sample`, `eval`, the end-of-run report and the previews go through here; the sampler
itself is ``dkdm_zoo.sampling``."""
