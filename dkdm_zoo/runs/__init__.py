"""The run folder: layout and metrics (``Run``), run.json (``Manifest``), one writer at a time
(``writer``), and the student's weights (``student``). ``Run`` and ``Manifest`` are torch-free."""

from dkdm_zoo.runs.manifest import Manifest
from dkdm_zoo.runs.run import Run

__all__ = ["Manifest", "Run"]
