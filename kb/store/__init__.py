"""Store: the index on disk. SQLite is the truth; FAISS and tantivy are derived from it.

database (documents, passages, vectors, generations), vector_index and exact_vectors
(FAISS, exact or IVF), lexical (tantivy BM25), page_advice and background (keeping cold
questions fast). May import errors only.
"""
