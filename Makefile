# LeukoPortal — two commands:
#   make run   runs the portal (web, Celery worker, beat) on the embedded default
#   make test  installs what the tests need and runs the whole suite on PostgreSQL + Redis
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: run test venv venv-dev services chromium ldap-build ldap-server benchmarks clean

$(VENV)/.installed: requirements.txt | ldap-build
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed
venv-dev: $(VENV)/.installed-dev

run: venv
	$(PY) manage.py runportal

services:
	scripts/ensure_services.sh

chromium:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

# python-ldap (directory sign-in) is built against OpenLDAP's and SASL's headers (and Python's, with a C compiler).
ldap-build:
	test -f /usr/include/ldap.h -a -f /usr/include/sasl/sasl.h || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q libldap2-dev libsasl2-dev)
	command -v gcc >/dev/null && $(PYTHON) -c "import os, sys, sysconfig; \
		sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc python3-dev)

# The directory tests start their own OpenLDAP server (slapd) and load it with ldap-utils.
ldap-server:
	test -x /usr/sbin/slapd -a -x /usr/bin/ldapadd || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q slapd ldap-utils)

test: venv-dev services chromium ldap-server
	scripts/test.sh

clean:
	rm -rf var test-output
