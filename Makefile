# dpa_perception developer entry points. `make demo` runs the main job, `make test` the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED ?= ../shared/testdata
OUT ?= out
ENGINE ?= $(OUT)/engine_yolox_nano

.PHONY: install demo demo-shared test lint typecheck bench clean

$(VENV)/.installed: setup.py setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .[dev]
	# type stubs only: the tensorrt runtime is not installable without NVIDIA's index
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	touch $@

install: $(VENV)/.installed

DEMO_MODEL := dpa_perception/demo/assets/demo_detector.onnx
DEMO_ENGINE := $(OUT)/engine_demo

# The main job, self-contained (no ../shared, nothing downloaded): build the dual-precision engine
# from the shipped demo detector (calibrated on rendered frames), render a 3-camera demo bag with a
# clear -> fog -> rain -> night timeline (cameras sharing one street, with ground truth in metres),
# calibrate the cameras from the surveyed point pairs written beside the bag, replay it through the
# node's pipeline in auto mode (detections, world-frame tracks), and score the tracks against the truth.
demo: install
	@test -d $(OUT)/demo_calib || $(VENV)/bin/dpa-demo-bag $(OUT)/demo_calib --cameras 1 --seconds 8 --fps 4 --seed 7 --quiet
	@test -f $(DEMO_ENGINE)/manifest.json || $(VENV)/bin/dpa-build $(DEMO_MODEL) --calib $(OUT)/demo_calib \
		--out $(DEMO_ENGINE) --force
	@test -d $(OUT)/demo_bag || { rm -f $(OUT)/demo_bag_points.yaml; \
		$(VENV)/bin/dpa-demo-bag $(OUT)/demo_bag --cameras 3 --seconds 40 --fps 10; }
	$(VENV)/bin/dpa-calibrate $(OUT)/demo_bag_points.yaml --out $(OUT)/demo_cameras.yaml --force
	$(VENV)/bin/dpa-replay $(OUT)/demo_bag --engine $(DEMO_ENGINE) --params $(OUT)/demo_cameras.yaml \
		--out $(OUT)/demo_replay --mode auto --force
	$(VENV)/bin/dpa-eval --tracks $(OUT)/demo_replay --bag $(OUT)/demo_bag --json $(OUT)/demo_track_eval.json
	@echo "demo report: $(OUT)/demo_replay/report.png, bird's-eye view: $(OUT)/demo_replay/birdseye.png"
	@echo "summary: $(OUT)/demo_replay/summary.json, tracking quality: $(OUT)/demo_track_eval.json"

# The same pipeline on the real roadside bag of the shared test data, under a fog ramp.
demo-shared: install
	@test -d $(SHARED) || { echo "make demo-shared: $(SHARED) not found (the shared test data)"; exit 2; }
	@test -f $(ENGINE)/manifest.json || $(VENV)/bin/dpa-build $(SHARED)/models/yolox_nano.onnx \
		--calib $(SHARED)/images --out $(ENGINE)
	$(VENV)/bin/dpa-replay $(SHARED)/bags/uadetrac_roadside_compressed_sqlite3 --engine $(ENGINE) \
		--out $(OUT)/replay_fog_ramp --weather fog-ramp --mode auto --force

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
