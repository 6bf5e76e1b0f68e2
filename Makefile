# openpolicy-deploy: the two commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLCHAIN := $(CURDIR)/.toolchain
# Pinned tools first: the venv (ansible, molecule, linters) and the Go-built binaries; Go's
# own install folder last, for a machine whose PATH does not name it (go.dev/doc/install).
export PATH := $(TOOLCHAIN)/bin:$(TOOLCHAIN)/venv/bin:$(PATH):/usr/local/go/bin
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# The podman settings these machines need (runc, lower ulimits, host network), without
# touching /etc: every podman call made through make, Ansible or Molecule reads this file.
export CONTAINERS_CONF := $(CURDIR)/images/containers.conf
# The local cluster's kubeconfig: the documented path (README, roles/k8s_cluster).
export KUBECONFIG := $(CURDIR)/.local/kubeconfig

ENV ?= local
INVENTORY := inventories/$(ENV)
# The local environment's vault password: a throwaway file outside git, made once (0600) by
# `make up`; its vault (inventories/local/group_vars/all/vault.yml) is gitignored too. Every
# other environment: the operator passes --vault-password-file (docs/secrets.md).
LOCAL_VAULT_PASSWORD := $(CURDIR)/.local/vault-password
ifeq ($(ENV),local)
export ANSIBLE_VAULT_PASSWORD_FILE := $(LOCAL_VAULT_PASSWORD)
VAULT_PASSWORD_FILE := $(LOCAL_VAULT_PASSWORD)
endif
PYTEST := python -m pytest
# pytest-xdist workers for tests/unit and tests/charts (docs/testing.md has the figures).
PYTEST_WORKERS ?= auto
# End-to-end modules side by side, a module per worker (each worker starts its own kwok cluster;
# every module has hosts and ports of its own): most of their time is spent waiting on hosts.
E2E_WORKERS ?= 2
MOLECULE_SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
# Scenarios run side by side (distinct host names and ports, see molecule/*/molecule.yml),
# each into its own log, printed when it fails.
MOLECULE_JOBS ?= 2
LOGS := $(CURDIR)/.local/logs

.PHONY: help system bootstrap images up down status lint test test-quick test-unit test-molecule test-e2e bench \
	$(addprefix molecule-,$(MOLECULE_SCENARIOS)) $(addprefix molecule-logged-,$(MOLECULE_SCENARIOS))

help: ## show the targets
	@grep -E '^[a-z0-9%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  make molecule-NAME    one Molecule scenario: $(MOLECULE_SCENARIOS)"

system: ## check the Debian packages (versions.toml [apt]) and Go; install them as root or with sudo -n
	python3 scripts/bootstrap.py --only system

# The bootstrap's first step is `system`: a fresh machine hears what it lacks in its first second.
bootstrap: $(VAULT_PASSWORD_FILE) ## install the pinned toolchain into ~/.cache/openpolicy-deploy (seconds when warm)
	python3 scripts/bootstrap.py

# Every playbook run but backup.yml reads the vault (the preflight checks the secrets), so every
# target that runs one gets the local throwaway password first: made once, 0600, never replaced.
$(LOCAL_VAULT_PASSWORD):
	mkdir -p "$(dir $@)" && (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$@")

images: bootstrap ## build the podman host images (Debian 12, plain and systemd), cached by input hash
	python3 scripts/podman_images.py build

# Progress of site.yml's stages: each task's start and how long the previous one took, a
# summary per role, the run's total (ansible.posix, pinned in requirements.yml).
SITE_CALLBACKS := ansible.posix.profile_roles,ansible.posix.timer

up: images ## bring up the whole platform on the local default (cluster + podman hosts + site.yml)
	ANSIBLE_CALLBACKS_ENABLED=$(SITE_CALLBACKS) ansible-playbook -i $(INVENTORY) playbooks/site.yml

# The toolchain first (seconds when warm): a clone that never ran `make up` has no ansible-playbook
# of its own, and its `make down` stopped at "command not found".
down: bootstrap ## stop the local environment and remove its state
	ansible-playbook -i $(INVENTORY) playbooks/teardown_local.yml

status: ## show the local environment: cluster, nodes, podman hosts
	python3 scripts/local_cluster.py status --workdir $(CURDIR)/.local/cluster || true
	podman ps --filter label=openpolicy.dev/environment=$(ENV) --format '{{.Names}}\t{{.Status}}\t{{.Image}}' || true

lint: bootstrap ## yamllint, ansible-lint (production profile), ruff, helm lint
	yamllint --strict .
	ansible-lint --profile production --offline
	actionlint
	ruff check scripts tests bench plugins molecule roles/*/files
	ruff format --check scripts tests bench plugins molecule roles/*/files
	# App charts vendor the library chart first (charts/*/charts/ is gitignored), then lint with
	# each ci/*-values.yaml: their defaults leave required values (image, service) empty on purpose.
	for chart in charts/*/; do \
	  helm dependency build --skip-refresh "$$chart" >/dev/null; \
	  values=$$(ls "$$chart"ci/*-values.yaml 2>/dev/null || true); \
	  if [ -z "$$values" ]; then helm lint --strict --quiet "$$chart"; \
	  else for v in $$values; do helm lint --strict --quiet "$$chart" -f "$$v" || exit 1; done; fi; \
	done

# The fifteen slowest tests close the output: where the edit loop's time goes. Work stealing:
# the tests last from milliseconds to half a minute, and xdist's default split left one worker
# idle for a minute at the end (250 s against 185 s for the same tests on two cores).
test-unit: bootstrap ## pytest: Python units, toolchain, charts and alert rules (no cluster needed)
	$(PYTEST) -n $(PYTEST_WORKERS) --dist worksteal --durations=15 tests/unit tests/charts

# Lint and the pytest workers side by side (each prints when it is done): the edit loop.
test-quick: bootstrap ## the edit loop: lint, unit and chart tests side by side (no podman, no cluster)
	$(MAKE) --no-print-directory --output-sync=target -j2 lint test-unit

test-molecule: images ## every Molecule scenario, MOLECULE_JOBS at a time; logs in .local/logs/
	$(MAKE) --no-print-directory --keep-going -j$(MOLECULE_JOBS) $(addprefix molecule-logged-,$(MOLECULE_SCENARIOS))

# One scenario into its own log: a line when it passes, the whole log when it fails, then its
# failed tests and assertion lines again (a CI report that keeps only the end still names
# them). Wide columns: Molecule folds its output to the terminal's width, 80 in a log.
# Its containers have fixed names, so a second checkout on the machine waits for the lock.
$(addprefix molecule-logged-,$(MOLECULE_SCENARIOS)): molecule-logged-%:
	@mkdir -p "$(LOGS)"; log="$(LOGS)/molecule-$*.log"; started=$$(date +%s); \
	echo "molecule $*: started (log: $$log)"; \
	if COLUMNS=240 flock /tmp/openpolicy-molecule-$*.lock molecule test -s $* >"$$log" 2>&1; then \
	  echo "molecule $*: passed in $$(( $$(date +%s) - started ))s"; \
	else \
	  echo "molecule $*: FAILED after $$(( $$(date +%s) - started ))s; its log:"; sed 's/^/[$*] /' "$$log"; \
	  echo "molecule $*: what failed (from the log above):"; \
	  grep -E '(FAILED|ERROR) tests/|[│ ]E  |fatal: |failed: \[' "$$log" | tail -40 | sed 's/^/[$*] /'; exit 1; \
	fi

# A static pattern rule: GNU make does not apply plain pattern rules to .PHONY targets.
$(addprefix molecule-,$(MOLECULE_SCENARIOS)): molecule-%: images ## one Molecule scenario: make molecule-<name>
	flock /tmp/openpolicy-molecule-$*.lock molecule test -s $*

test-e2e: images ## end-to-end tests against a local cluster the tests start and stop themselves
	$(PYTEST) -n $(E2E_WORKERS) --dist loadfile --no-loadscope-reorder --durations=0 tests/e2e

test: test-quick test-molecule test-e2e ## everything CI runs (.ci/run): lint, unit, charts, Molecule, e2e

bench: bootstrap ## benchmarks: print their figures, not part of make test
	for b in bench/bench_*.py; do python "$$b"; done
