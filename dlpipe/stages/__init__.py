"""One module per pipeline stage; each exposes ``run(...) -> Result``."""
