"""What the App and field descriptions say about a model, without loading one.

Imports neither torch nor the model code: the panel and listing models use it on a
dataset's run records alone.
"""

from __future__ import annotations

# Pearson correlations the published write-up of the siamese pretext idea reported
# (under 100 training photos)
PUBLISHED_CORRELATIONS = {"blur": 0.955, "brightness": 0.775, "rotation": 0.37}


def describe(view, jpeg_file_reader: bool = False) -> str:
    """How a model reads an image, in words, from its view (a ``views.View`` or the
    dict a run record stores) and whether it has a reader of JPEG files
    (``PretextModel.jpeg_reader``)."""
    view = view if isinstance(view, dict) else view.to_dict()
    if view.get("kind") == "patches":
        text = (
            f"read in the image's own pixels from {view['count']} patches of {view['size']} px "
            f"spread over it ({view['quantile']:.0%} quantile of the patch scores)"
        )
        if view.get("encoded_quality"):
            text += (
                "; a JPEG file reads the quality its tables say, unless its pixels read "
                "under half of it"
            )
        if jpeg_file_reader:
            text += "; a JPEG file is read by a reader trained on copies saved as JPEGs"
        return text
    return f"read from the whole image resized to {view['resolution']} px (shorter side)"


def training_summary(
    key: str, unit: str, metrics: dict, baseline: dict | None, images: int, minimum: int = 5
) -> str:
    """One sentence on a trained model's held-out numbers, for a toast or a log line."""

    def number(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    text = (
        f"Trained '{key}' ({unit}): held-out Spearman {number(metrics.get('spearman'))}, "
        f"mean error {number(metrics.get('mae'))} {unit}, on {images} image(s)"
    )
    if baseline:
        text += f"; {baseline['name']}: Spearman {number(baseline.get('spearman'))}"
    if images < minimum:
        text += f". Too few images to mean much (fewer than {minimum})"
    return text + "."
