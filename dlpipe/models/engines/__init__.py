"""Batch-inference engines: how ``embed`` (and ``predict`` on files) map a model over every item.

``local`` runs the worker in this process; ``ray`` hands contiguous shards of items to Ray Data
actors, each of which loads the model once. Both yield ``(first row, results)`` blocks: ``embed``
merges them into one memory-mapped file with :func:`dlpipe.models.extractor.write_blocks`.
"""
