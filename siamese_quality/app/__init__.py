"""FiftyOne App glue: operators and panels, registered by the plugin's ``__init__.py``.

Everything here is thin: it parses parameters, calls the SDK and reports
progress. Heavy dependencies (torch) are imported inside the SDK functions.
"""

from .operators import OPERATORS
from .panel import QualityPanel

PANELS = [QualityPanel]


def register_plugin(plugin) -> None:
    """Registers every operator and panel of the plugin on ``plugin``."""
    for cls in OPERATORS + PANELS:
        plugin.register(cls)
