# Two entry points for a fresh machine (see README):
#   make demo   set up, make a small sample archive, extract it, print the triggers found
#   make test   set up, lint (ruff), run the test suite
#   make ui     the demo, then a checkpoint trained on it and the web page (tiny offline models)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := demo

.PHONY: demo ui test setup browser clean

setup: $(VENV)/.installed

# torch/torchvision are pinned in pyproject.toml; pip takes them from the machine's local wheel cache.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: setup
	rm -rf $(DEMO)
	$(BIN)/vtm sample $(DEMO)/videos
	@# extract exits 1 when any video failed: the sample holds broken files on purpose.
	$(BIN)/vtm extract $(DEMO)/videos --cache $(DEMO)/cache || echo "(the failures above are the sample's deliberately broken files)"
	$(BIN)/vtm cache info $(DEMO)/cache
	$(BIN)/vtm triggers $(DEMO)/cache --json $(DEMO)/triggers.json

# The web page on the demo archive. Tiny random LLaVA and DETR stand in for the real ones (nothing is
# downloaded), so the page works end to end but its descriptions are noise: see the README for real models.
ui: demo
	$(BIN)/python -c "from vtm.models.tiny import make_tiny_llava, make_tiny_detr; make_tiny_llava('$(DEMO)/models/tiny-llava'); make_tiny_detr('$(DEMO)/models/tiny-detr')"
	$(BIN)/vtm annotate $(DEMO)/videos --cache $(DEMO)/cache --out $(DEMO)/annotations.jsonl
	$(BIN)/vtm train-from-cache $(DEMO)/cache --annotations $(DEMO)/annotations.jsonl --out $(DEMO)/runs/demo --llm $(DEMO)/models/tiny-llava --epochs 20 --no-progress
	$(BIN)/vtm ui --checkpoints $(DEMO)/runs --videos $(DEMO)/videos --detector $(DEMO)/models/tiny-detr --detector-threshold 0.6

# The web UI tests drive a real headless Chromium (Playwright's own browser download is not reachable,
# so it uses the system's); installed here so a fresh machine needs no manual step.
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "The web page's tests need Chromium: run 'apt-get install -y chromium' as root, then make test again." >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(DEMO)
