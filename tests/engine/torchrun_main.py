"""Entry point for the torchrun test: the real CLI app over the registry with the tiny test plugin."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dkdm_zoo.cli.app import create_app  # noqa: E402
from tests.methods.tiny import tiny_registry  # noqa: E402

if __name__ == "__main__":
    create_app(tiny_registry())(sys.argv[1:])
