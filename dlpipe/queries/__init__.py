"""Commands that answer questions and are not DVC stages (predict, search query, word2vec queries).

Each module exposes typed functions the CLI calls; none imports a stage module or another query module.
"""
