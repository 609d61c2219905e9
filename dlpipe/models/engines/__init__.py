"""Batch-inference engines: how ``embed`` maps a model over every item of a manifest.

``local`` runs the tf.data pipeline in this process; ``ray`` hands contiguous shards of rows to
Ray Data actors, each of which loads the model once. Both yield ``(first row, vectors)`` blocks
that :func:`dlpipe.models.extractor.write_blocks` merges into the same memory-mapped file.
"""
