# Two commands do all set-up on a fresh machine:
#   make demo   install into .venv, index corpus/, ask a sample question
#   make test   install into .venv (with test tools), run the test suite
VENV ?= .venv
PYTHON ?= python3
QUESTION ?= Why did junior doctors vote to strike, and what could avert it?

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: this takes the CPU wheel, never a multi-GB CUDA build.
	$(VENV)/bin/pip install --quiet "torch==2.13.0"
	# [ray]: the Ray tests run against a real local Ray cluster, never skipped; [office]
	# and [ocr]: every optional reader is tested.
	$(VENV)/bin/pip install --quiet -e ".[test,ray,office,ocr]"
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

clean:
	rm -rf $(VENV) index/kb.sqlite* index/vectors.*.faiss index/lexical.* index/.kb.lock
