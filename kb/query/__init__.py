"""Query: a question -> ranked, cited hits.

search runs the dense and lexical retrievers and merges them (fusion), highlight picks
each hit's best sentence, hits is the result type and render turns hits into terminal
text or JSON. May import ingest, store, embed and errors; never serve or the top level.
"""
