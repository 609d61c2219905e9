"""Finding neighbours and groups in embeddings: FAISS indices, k-means clustering, reading embed's output."""
