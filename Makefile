# Two targets a new user needs: `make demo` (the main job) and `make test`.
# Setup pins torch to the CPU wheel before anything that depends on it, so no CUDA build
# of torch (and no torchvision) is ever pulled in.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench

$(BIN)/unclip: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(BIN)/unclip

demo: setup
	$(BIN)/unclip train clip --config configs/shapes/clip.yaml --resume
	$(BIN)/unclip eval clip --model runs/clip/model

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/render.py
	$(BIN)/python benchmarks/train_clip.py
