"""Where a classifier looks: occlusion sensitivity, Grad-CAM, and the evidence that the maps are right.

Pure functions on arrays and a Keras model (no files): :mod:`.occlusion` and :mod:`.gradcam`
make one map per image at the model's input resolution, :mod:`.evidence` scores maps with the
deletion metric and the pointing game. The ``heatmap`` stage wires them to datasets and pictures.
"""
