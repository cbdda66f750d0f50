"""siamese_quality: label-free image quality from self-supervised siamese pretext models.

The core modules (distortions, model, training, calibration) import no FiftyOne;
the FiftyOne-facing SDK functions are loaded on first use so that
``import siamese_quality`` stays cheap.
"""

__version__ = "0.1.0"

PLUGIN_NAME = "@siamese-quality/siamese_quality"
