"""The public path of :mod:`siamese_quality.core.training`, kept for user code and for
model records written before the core moved: importing it gives that very module."""

import sys

from .core import training

sys.modules[__name__] = training
