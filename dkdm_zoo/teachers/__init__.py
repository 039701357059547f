"""Teachers: frozen pretrained diffusion models that serve as the only data source."""
