"""Datasets: the manifest every stage reads, decoding of media files, the sample generators."""
