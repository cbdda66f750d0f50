"""What the App and field descriptions say about a model, without loading one.

Imports neither torch nor the model code: the panel and listing models use it on a
dataset's run records alone.
"""

from __future__ import annotations

# Pearson correlations the published write-up of the siamese pretext idea reported
# (under 100 training photos)
PUBLISHED_CORRELATIONS = {"blur": 0.955, "brightness": 0.775, "rotation": 0.37}


def describe(view) -> str:
    """How a model reads an image, in words, from its view (a ``views.View`` or the
    dict a run record stores)."""
    view = view if isinstance(view, dict) else view.to_dict()
    if view.get("kind") == "patches":
        return (
            f"read in the image's own pixels from {view['count']} patches of {view['size']} px "
            f"spread over it ({view['quantile']:.0%} quantile of the patch scores)"
        )
    return f"read from the whole image resized to {view['resolution']} px (shorter side)"
