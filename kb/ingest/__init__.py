"""Ingest: files on disk -> documents -> passages, and the run that commits them.

Walks folders (documents), reads each format (readers/ -> sections), splits text into
passages (chunking, passages), and drives a `kb index` run (pipeline, with prepare here
or prepare_ray on a Ray cluster). May import store, embed and errors; never query,
serve or the top-level modules.
"""
