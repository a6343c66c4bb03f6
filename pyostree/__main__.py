"""``python -m pyostree``."""

from .cli import run

run()
