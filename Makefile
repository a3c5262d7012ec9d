# Two commands a newcomer needs: `make test` and `make demo` (see README.md).
# Both create ./.venv and install everything into it; nothing else on the
# machine is touched except Debian packages a recipe needs (apt-get).

VENV    ?= .venv
PY      := $(VENV)/bin/python
# CPU wheel by default so pip never resolves the multi-GB CUDA build.
# GPU users: make install TORCH_SPEC="torch"  (or install their CUDA torch first)
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test lint demo clean-venv

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
