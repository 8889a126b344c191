# Two commands set everything up on a fresh machine:
#   make demo   creates .venv, installs simlabel, runs the main job on the default data
#   make test   creates .venv if missing, installs with test extras, runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Re-install whenever the project's dependencies change.
STAMP  := $(VENV)/.simlabel-installed

.PHONY: demo test test-avx2 docs install bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	# torch first and pinned: 2.13.0 is the CPU build; anything else pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,docs,ray,openvino]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/simlabel demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	cd src && ../$(BIN)/lint-imports --config ../pyproject.toml
	$(MAKE) docs
	$(BIN)/python -m pytest -q

# The docs site: the API from the docstrings, the CLI page from every --help, the guides in docs/*.md.
# Warnings are errors: an export without its numpydoc sections, a broken reference or a bad page fails.
docs: $(STAMP)
	rm -rf docs/_generated
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# The suite as on the AVX2-only machine kind, run on an AVX-512 one: oneDNN (OpenVINO, torch's convolutions),
# torch's own kernels, MKL, OpenBLAS and numpy's dispatch capped at AVX2; simlabel's CPU flags honour the cap
# (encoders.base.cpu_flags), so the engine choice and the ISA skips are the AVX2 kind's. ONNX Runtime's MLAS
# has no such cap and still picks its kernels from the silicon.
AVX2_CAP := ONEDNN_MAX_CPU_ISA=AVX2 DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
	OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"
test-avx2: $(STAMP)
	$(AVX2_CAP) $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_knn.py
	$(BIN)/python benchmarks/bench_weights.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .hypothesis docs/_build docs/_generated docs/cli.md
