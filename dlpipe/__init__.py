"""dlpipe: applied deep learning as a reproducible DVC pipeline."""

from dlpipe.core import lean_keras

__version__ = "0.1.0"

lean_keras.install()  # before any dlpipe module imports Keras
