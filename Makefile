# Two targets a new user needs: `make demo` (the main job) and `make test`.
# Setup pins torch to the CPU wheel before anything that depends on it, so no CUDA build
# of torch (and no torchvision) is ever pulled in.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup browser demo train test test-all bench serve

$(BIN)/unclip: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,web,onnx]'
	touch $@

setup: $(BIN)/unclip

demo: setup
	$(BIN)/unclip demo

# Every stage of the shapes model from scratch with the presets (resumable), then one folder.
train: setup
	$(BIN)/unclip train clip --config configs/shapes/clip.yaml --resume
	$(BIN)/unclip train prior --config configs/shapes/prior.yaml --resume
	$(BIN)/unclip train prior_ar --config configs/shapes/prior_ar.yaml --resume
	$(BIN)/unclip train prior_eclipse --config configs/shapes/prior_eclipse.yaml --resume
	$(BIN)/unclip train decoder --config configs/shapes/decoder.yaml --resume
	$(BIN)/unclip train decoder --config configs/shapes/decoder_continue.yaml --resume
	$(BIN)/unclip train decoder --config configs/shapes/decoder_phase3.yaml --resume
	# the shipped decoder's fourth phase: 13 min on one H100, many hours on a CPU
	$(BIN)/unclip train decoder --config configs/shapes/decoder_gpu.yaml --resume \
		--clip=runs/clip/model --init=runs/decoder_phase3/model
	$(BIN)/unclip train upsampler --stage 1 --config configs/shapes/upsampler1.yaml --resume
	$(BIN)/unclip train upsampler --stage 1 --config configs/shapes/upsampler1_full.yaml --resume
	$(BIN)/unclip train upsampler --stage 2 --config configs/shapes/upsampler2.yaml --resume
	$(BIN)/unclip train upsampler --stage 2 --config configs/shapes/upsampler2_full.yaml --resume
	# the shipped second upsampler: 600 + 900 more whole-image steps, three inputs in four left clean
	$(BIN)/unclip train upsampler --stage 2 --config configs/shapes/upsampler2_full.yaml --resume \
		--init=runs/upsampler2_full/model --model.clean_prob=0.75 --train.out_dir=runs/upsampler2_clean
	$(BIN)/unclip train upsampler --stage 2 --config configs/shapes/upsampler2_full.yaml --resume \
		--init=runs/upsampler2_clean/model --model.clean_prob=0.75 --train.steps=900 --train.out_dir=runs/upsampler2_more
	# the reranker: a CLIP trained with hard negatives, which tells which colour goes with which shape
	$(BIN)/unclip train clip --config configs/shapes/clip.yaml --resume --train.steps=3000 \
		--data.hard_negatives=true --train.out_dir=runs/reranker
	$(BIN)/unclip assemble runs/prior/model runs/prior_ar/model runs/prior_eclipse/model runs/decoder_gpu/model runs/upsampler1_full/model runs/upsampler2_more/model \
		--reranker runs/reranker/model --rerank 12 --rerank-threshold 0.78 --compose --out runs/model

# Debian's Chromium for the browser tests (Playwright's own browser download cannot work here).
browser:
	@command -v chromium >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "could not install chromium: the browser tests will be skipped"

# The quick suite (under 5 minutes on 2 cores); test-all adds the slow, browser and shipped-model tests.
test: setup
	$(BIN)/python -m pytest -m "not slow and not browser and not shipped"

test-all: setup browser
	$(BIN)/python -m pytest

serve: setup
	$(BIN)/unclip serve


# Every benchmark script prints its figures; each takes minutes to tens of minutes on 2 cores.
bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
