"""Text: tokenising a corpus, training word2vec with gensim, exporting and querying word vectors."""
