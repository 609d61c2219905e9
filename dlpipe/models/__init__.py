"""Keras models: the backbone registry and the layers dlpipe adds around it."""
