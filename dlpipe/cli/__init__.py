"""The command line: a root Typer app and one module per command (group). Only parsing and printing live here."""

from dlpipe.cli.app import app, main

__all__ = ["app", "main"]
