# dpa_perception developer entry points. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/testdata
OUT ?= out
ENGINE ?= $(OUT)/engine_yolox_nano

.PHONY: install demo test lint typecheck bench clean

$(VENV)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .[dev]
	# type stubs only: the tensorrt runtime is not installable without NVIDIA's index
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	touch $@

install: $(VENV)/.installed

# The main job: build the dual-precision engine (once) and replay the roadside bag through the
# pipeline in auto mode under a fog ramp; prints where the report and summary are.
demo: install
	@test -d $(SHARED) || { echo "make demo: $(SHARED) not found (the shared test data)"; exit 2; }
	@test -f $(ENGINE)/manifest.json || $(VENV)/bin/dpa-build $(SHARED)/models/yolox_nano.onnx \
		--calib $(SHARED)/images --out $(ENGINE)
	$(VENV)/bin/dpa-replay $(SHARED)/bags/uadetrac_roadside_compressed_sqlite3 --engine $(ENGINE) \
		--out $(OUT)/replay_fog_ramp --weather fog-ramp --mode auto

test: install
	$(PY) -m pytest -q -rs

lint: install
	$(VENV)/bin/ruff check dpa_perception test benchmarks launch

typecheck: install
	$(VENV)/bin/mypy

bench: install
	@test -f $(ENGINE)/manifest.json || $(VENV)/bin/dpa-build $(SHARED)/models/yolox_nano.onnx \
		--calib $(SHARED)/images --out $(ENGINE)
	$(VENV)/bin/dpa-bench --engine $(ENGINE) --images $(SHARED)/images/uadetrac_MVI_20011_img00001.jpg --compare-shapes

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache
