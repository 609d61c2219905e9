"""The base layer: typed params, errors and exit codes, atomic artifact writes, artifact paths, console, process pool.

Nothing here imports any other part of dlpipe (a test enforces it).
"""
