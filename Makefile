# Everything runs from a virtual environment in .venv (created on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,colmap,export,dev
WEIGHTS := weights/aslfeat.pt
MODEL   := weights/aslfeat.onnx
DEMO    := out/demo

.PHONY: install test lint export demo bench train clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

test: install
	$(BIN)/python -m pytest -q -ra

lint: install
	$(BIN)/ruff check aslfeat_cli export training tests benchmarks
	$(BIN)/ruff format --check aslfeat_cli export training tests benchmarks

export: install
	$(BIN)/aslfeat export $(WEIGHTS) -o $(MODEL)

demo: install
	$(BIN)/python -m aslfeat_cli.sample $(DEMO)/images $(DEMO)/pairs.txt
	$(BIN)/aslfeat extract $(DEMO)/images -o $(DEMO)/features.h5 --overwrite
	$(BIN)/aslfeat match $(DEMO)/features.h5 -o $(DEMO)/matches.h5 --pairs $(DEMO)/pairs.txt --verify homography --overwrite
	$(BIN)/aslfeat show $(DEMO)/features.h5 --matches $(DEMO)/matches.h5 --images $(DEMO)/images -o $(DEMO)/pictures
	@echo "demo written to $(DEMO)/"

bench: install
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_match.py
	$(BIN)/python benchmarks/eval_quality.py

train: install
	$(BIN)/python -m aslfeat_training.train --out runs/train

clean:
	rm -rf $(VENV) out .pytest_cache
