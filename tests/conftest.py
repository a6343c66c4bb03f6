"""Hypothesis profiles. The default run (CI and the README's test command) is derandomized:
every run tries the same examples, so a red run is reproducible and no run turns red because
a random draw found something new. ``PYOSTREE_FUZZ=explore`` draws fresh random examples on
each run; loop it to look for new bugs, then add what it finds as a regression case."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("explore" if os.environ.get("PYOSTREE_FUZZ") == "explore"
                      else "repeatable")
