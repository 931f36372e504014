# CardTwin: every install step lives here, so a fresh clone needs only `make run` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SYSTEM_STAMP := $(VENV)/.system-stamp
DAYS ?= 7
OUT ?= runs/nantong_2024
PORT ?= 8501

.PHONY: install run dashboard test test-slow bench calibrate lint clean

# System packages first (order only: a changed script does not reinstall the venv).
$(STAMP): pyproject.toml | $(SYSTEM_STAMP)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m sim.compile_kernels
	touch $(STAMP)

# Debian packages the venv cannot bring (Chromium and a CJK font, for the PDF reports); checked
# once per venv and again when the script changes. The stamp lives in the venv, so `make clean`
# makes the next install check again.
$(SYSTEM_STAMP): scripts/setup_system.sh
	PYTHON=$(PYTHON) bash scripts/setup_system.sh
	mkdir -p $(VENV)
	touch $(SYSTEM_STAMP)

install: $(STAMP) $(SYSTEM_STAMP)

## Run the default scenario (Nantong 2024, full scale) for $(DAYS) days and print the KPI summary.
run: install
	$(BIN)/python run_scenario.py scenarios/nantong_2024.yaml --days $(DAYS) --out $(OUT)

## Live dashboard (Streamlit) at http://127.0.0.1:$(PORT); only on this machine.
dashboard: install
	$(BIN)/streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true --server.maxUploadSize 1

## Unit, property, event-log and golden-file tests (about 10 minutes on 2 cores).
test: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

## Full-scale checks (determinism of two 7-day runs, etc.).
test-slow: install
	$(BIN)/python -m pytest -q -m slow

bench: install
	$(BIN)/python bench/bench_nantong.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
