"""The Typer CLI. Modules here import torch only inside command bodies that need it."""
