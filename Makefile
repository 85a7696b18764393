# Everything runs from a virtual environment in .venv (created on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS ?= cpu,colmap,export,openvino,ray,dev
WEIGHTS := weights/aslfeat.pt
MODEL   := weights/aslfeat.onnx
DEMO    := out/demo

.PHONY: install test check-wheel lint export demo bench train clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	touch $@

# One pytest process per test file: in one process for the whole suite, fresh-clone CI runs
# died with SIGSEGV (no traceback) at a test that passes alone (test_match_crash, then
# test_memory_limits when that file was moved out); cause not found yet, see the README.
# Exit status 5 (a file whose tests all skip or none collected) is not a failure.
test: install
	@status=0; for f in tests/test_*.py; do \
		$(BIN)/python -m pytest -q -ra -p no:cacheprovider $$f; rc=$$?; \
		if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then echo "FAILED: $$f (exit $$rc)"; status=1; fi; \
	done; exit $$status

# The package as users get it: a wheel installed without -e into a fresh venv (cpu extra,
# from the package index or pip's cache), then `aslfeat info` and `aslfeat extract` run
# outside the checkout, so nothing can be imported from the source tree.
CHECK := build/check-wheel
check-wheel: install
	rm -rf $(CHECK) && mkdir -p $(CHECK)/dist
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(CHECK)/dist .
	$(PYTHON) -m venv $(CHECK)/venv
	$(CHECK)/venv/bin/pip install -q "$$(ls $(CHECK)/dist/aslfeat-*.whl)[cpu]"
	$(BIN)/python -m aslfeat_cli.sample $(CHECK)/images
	cd $(CHECK) && venv/bin/aslfeat info > info.txt && cat info.txt
	grep -q "^model: $$(cd $(CHECK) && pwd)/venv/.*/aslfeat_cli/weights/aslfeat.onnx" $(CHECK)/info.txt
	cd $(CHECK) && venv/bin/aslfeat extract images/ -o features.h5 --max-dim 256
	cd $(CHECK) && venv/bin/python -c "import h5py; f = h5py.File('features.h5'); \
		assert len(f) >= 3 and all(len(f[k]['keypoints']) > 100 for k in f), 'no features'"
	@echo "check-wheel: the installed wheel works"

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
