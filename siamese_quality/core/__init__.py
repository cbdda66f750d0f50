"""The core: distortions, images, views, models, training, calibration, evaluation and
scoring of image files. Nothing here imports FiftyOne (a test checks); the SDK and the
App sit on top (docs/ARCHITECTURE.md)."""
