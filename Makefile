# Two commands do all set-up on a fresh machine:
#   make demo   install into .venv, index corpus/, ask a sample question
#   make test   install into .venv (with test tools), run the test suite
#   make docs   regenerate the CLI reference from --help, build the docs site (strict)
VENV ?= .venv
PYTHON ?= python3
QUESTION ?= Why did junior doctors vote to strike, and what could avert it?

.PHONY: install demo test docs docs-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: this takes the CPU wheel, never a multi-GB CUDA build.
	$(VENV)/bin/pip install --quiet "torch==2.13.0"
	# [ray]: the Ray tests run against a real local Ray cluster, never skipped; [office]
	# and [ocr]: every optional reader is tested; [docs]: MkDocs builds docs/, cog
	# regenerates the CLI reference from --help.
	$(VENV)/bin/pip install --quiet -e ".[test,ray,office,ocr,docs]"
	# An editable install has no bytecode for kb until Python writes it, which it never
	# does under PYTHONDONTWRITEBYTECODE: compile now, as pip does for a normal install
	# (otherwise every `kb` process compiles kb from source, ~0.1 s).
	$(VENV)/bin/python -m compileall -q kb
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/kb index corpus
	$(VENV)/bin/kb ask "$(QUESTION)" -k 3

test: install
	$(VENV)/bin/python -m pytest -q

# The CLI reference is generated from the Click commands (cog), then the site is built in
# strict mode: a broken link, a missing page or a bad API reference fails the build.
docs: install
	$(VENV)/bin/cog -I docs -r --verbosity=1 docs/cli-reference.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# What CI runs: the reference must already be current (it is never rewritten here).
docs-check: install
	$(VENV)/bin/cog -I docs --check --diff --check-fail-msg "run make docs" docs/cli-reference.md
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) site index/kb.sqlite* index/vectors.*.faiss index/lexical.* index/.kb.lock
