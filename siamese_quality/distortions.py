"""The public path of :mod:`siamese_quality.core.distortions`, kept for user code and for
model records written before the core moved: importing it gives that very module."""

import sys

from .core import distortions

sys.modules[__name__] = distortions
