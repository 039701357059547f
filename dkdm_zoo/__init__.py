"""dkdm-zoo: data-free knowledge distillation of diffusion models, any teacher to any student.

Importing the package is cheap (no torch); heavy modules are imported where they are used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dkdm-zoo")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
