"""U-ViT student for dkdm-zoo, registered through the public ``register_students`` hook."""

__version__ = "0.1.1"
