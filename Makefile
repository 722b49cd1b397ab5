# One-command set-up: `make test` and `make demo` install torch only when it is missing
# (pinned, overridable: TORCH_SPEC), build the extension without build isolation (an isolated
# build would fetch another torch), and rebuild only when csrc/, setup.py, pyproject.toml or
# the installed torch version change.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
PIP := $(PYTHON) -m pip
STAMP := build/.installed
TORCH_STAMP := build/.torch-version
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: install test demo docs bench nvcc-check clean FORCE

install: $(STAMP)

# Rewritten only when the installed torch version differs from the recorded one.
$(TORCH_STAMP): FORCE
	@mkdir -p build
	@v=$$($(PYTHON) -c "import torch; print(torch.__version__)" 2>/dev/null || echo none); \
	  [ "$$v" = "$$(cat $@ 2>/dev/null)" ] || echo "$$v" > $@

$(STAMP): $(SOURCES) $(TORCH_STAMP)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	@$(PYTHON) -c "import setuptools, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" 2>/dev/null \
	  || $(PIP) install "setuptools>=64"
	@$(PYTHON) -c "import ninja" 2>/dev/null || $(PIP) install ninja
	$(PIP) install --no-build-isolation -e ".[test]"
	@$(PYTHON) -c "import torch; print(torch.__version__)" > $(TORCH_STAMP)
	@touch $@

test: $(STAMP)
	$(PYTHON) -m pytest -q tests

demo: $(STAMP)
	$(PYTHON) -m entclust demo

# The documentation (docs/: Sphinx with autodoc and napoleon, MyST Markdown) as HTML in
# build/docs; every warning is an error. Installs the docs extra's packages when they are missing.
docs: $(STAMP)
	@$(PYTHON) -c "import sphinx, myst_parser" 2>/dev/null || $(PIP) install "sphinx>=7" "myst-parser>=2"
	rm -rf build/docs
	$(PYTHON) -m sphinx -W --keep-going -E -q -b html docs build/docs
	@echo "documentation: build/docs/index.html"

bench: $(STAMP)
	$(PYTHON) benchmarks/bench_losses.py
	$(PYTHON) -m entclust bench solvers
	$(PYTHON) benchmarks/bench_kernels.py

# Compile-only check of every csrc/cuda/*.cu against torch's headers (needs nvcc, no GPU).
nvcc-check: $(STAMP)
	PYTHON=$(PYTHON) bash .ci/nvcc_check.sh

clean:
	rm -rf build entclust/_C*.so *.egg-info
