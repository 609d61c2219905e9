"""The command line: a root Typer app (:mod:`dlpipe.cli.app`) and one module per command group.

Only parsing and printing live here. The package imports nothing itself, so importing one
command module never drags in the root app (and no import cycle runs through this file).
"""
