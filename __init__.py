"""FiftyOne plugin entry point for siamese_quality: registration only.

FiftyOne re-runs this file for every ``OperatorRegistry()``, so it stays thin:
the operators and panels live in the ``siamese_quality`` package, which imports
torch lazily.
"""

import importlib.util
import os
import sys

if importlib.util.find_spec("siamese_quality") is None:
    # Plugin downloaded with `fiftyone plugins download` but the library not
    # pip-installed: use the copy bundled in this folder, so the App and SDK
    # users share one `siamese_quality` module either way.
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

from siamese_quality.app import register_plugin  # noqa: E402


def register(p):
    register_plugin(p)
