"""Keras models: backbones, layers, input pipelines, the model store, task heads, training and embedding."""
