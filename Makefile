# openpolicy-deploy: the two commands are `make up` and `make test` (see README.md).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

TOOLCHAIN := $(CURDIR)/.toolchain
# Pinned tools first: the venv (ansible, molecule, linters) and the Go-built binaries.
export PATH := $(TOOLCHAIN)/bin:$(TOOLCHAIN)/venv/bin:$(PATH)
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
MOLECULE_SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))

.PHONY: help bootstrap images up down status lint test test-unit test-molecule test-e2e bench $(addprefix molecule-,$(MOLECULE_SCENARIOS))

help: ## show the targets
	@grep -E '^[a-z0-9%-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  make molecule-NAME    one Molecule scenario: $(MOLECULE_SCENARIOS)"

bootstrap: $(VAULT_PASSWORD_FILE) ## install the pinned toolchain into ~/.cache/openpolicy-deploy (seconds when warm)
	python3 scripts/bootstrap.py

# Every playbook run reads the vault (the preflight checks the secrets), so every target that
# runs one gets the local throwaway password first: made once, 0600, never replaced.
$(LOCAL_VAULT_PASSWORD):
	mkdir -p "$(dir $@)" && (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > "$@")

images: bootstrap ## build the podman host images (Debian 12, plain and systemd), cached by input hash
	python3 scripts/podman_images.py build

up: images ## bring up the whole platform on the local default (cluster + podman hosts + site.yml)
	ansible-playbook -i $(INVENTORY) playbooks/site.yml

down: $(VAULT_PASSWORD_FILE) ## stop the local environment and remove its state
	ansible-playbook -i $(INVENTORY) playbooks/teardown_local.yml

status: ## show the local environment: cluster, nodes, podman hosts
	python3 scripts/local_cluster.py status --workdir $(CURDIR)/.local/cluster || true
	podman ps --filter label=openpolicy.dev/environment=$(ENV) --format '{{.Names}}\t{{.Status}}\t{{.Image}}' || true

lint: bootstrap ## yamllint, ansible-lint (production profile), ruff, helm lint
	yamllint --strict .
	ansible-lint --profile production --offline
	actionlint
	ruff check scripts tests bench plugins
	ruff format --check scripts tests bench plugins
	# App charts vendor the library chart first (charts/*/charts/ is gitignored), then lint with
	# each ci/*-values.yaml: their defaults leave required values (image, service) empty on purpose.
	for chart in charts/*/; do \
	  helm dependency build --skip-refresh "$$chart" >/dev/null; \
	  values=$$(ls "$$chart"ci/*-values.yaml 2>/dev/null || true); \
	  if [ -z "$$values" ]; then helm lint --strict --quiet "$$chart"; \
	  else for v in $$values; do helm lint --strict --quiet "$$chart" -f "$$v" || exit 1; done; fi; \
	done

test-unit: bootstrap ## pytest: Python units, toolchain, charts and alert rules (no cluster needed)
	$(PYTEST) tests/unit tests/charts

test-molecule: images ## every Molecule scenario under molecule/ (create, converge, idempotence, verify, destroy)
	for scenario in $(MOLECULE_SCENARIOS); do molecule test -s "$$scenario" || exit 1; done

# A static pattern rule: GNU make does not apply plain pattern rules to .PHONY targets.
$(addprefix molecule-,$(MOLECULE_SCENARIOS)): molecule-%: images ## one Molecule scenario: make molecule-<name>
	molecule test -s $*

test-e2e: images ## end-to-end tests against a local cluster the tests start and stop themselves
	$(PYTEST) tests/e2e

test: lint test-unit test-molecule test-e2e ## everything CI runs (.ci/run)

bench: bootstrap ## benchmarks: print their figures, not part of make test
	for b in bench/*.py; do python "$$b"; done
