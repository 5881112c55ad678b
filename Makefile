# Set-up, tests, the demo and benchmarks. Every target installs what it needs first.
PYTHON ?= python3
FOLDERS := ressl wcl simmatch lewel kshot_nas bcnet cafenet mctnas vitas entrannas toponas dist_kd maskd dyrep \
           lightvit greenmim ipt taylorsenet
PRESENT := $(foreach f,$(FOLDERS),$(if $(wildcard $(f)/tests),$(f)))
DEMO := $(firstword $(filter ressl,$(PRESENT)) $(PRESENT))
STAMP := .setup-$(shell $(PYTHON) -c 'import sys; print("%d%d" % sys.version_info[:2])' 2>/dev/null).stamp

.PHONY: setup test test-repo demo bench list $(addprefix test-,$(FOLDERS)) $(addprefix bench-,$(FOLDERS))

setup: $(STAMP)

# Installs torch/torchvision/numpy/pyyaml/tqdm/pytest and `common` (editable) into $(PYTHON)'s environment.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PYTHON) -m pip install --disable-pip-version-check -q --no-deps -e .
	@touch $@

# Every folder's tests in its own pytest process, then the repo-level tests; one summary line at the end.
test: setup
	$(PYTHON) tests/run_all.py $(PRESENT)

test-repo: setup
	$(PYTHON) -m pytest -q tests

$(addprefix test-,$(FOLDERS)): test-%: setup
	cd $* && $(PYTHON) -m pytest -q tests

# The embedded default of the reference folder (ReSSL), end to end on CPU.
demo: setup
	cd $(DEMO) && $(PYTHON) main.py --cfg cfg.yaml

# Benchmarks print figures (speed, memory); they are never tests.
bench: setup
	@for f in $(PRESENT); do if [ -f $$f/bench.py ]; then echo "== $$f"; (cd $$f && $(PYTHON) bench.py) || exit 1; fi; done

$(addprefix bench-,$(FOLDERS)): bench-%: setup
	cd $* && $(PYTHON) bench.py

list:
	@echo $(PRESENT)
