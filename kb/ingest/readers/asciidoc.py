from ..sections import Section
def looks_like_asciidoc(text): return False
def section(text): return Section(text)
