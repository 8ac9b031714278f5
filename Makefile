# Two commands on a fresh Debian 12 machine, as root:
#   make demo   — set up, then run a narrated two-device shift with a dock and MQTT
#   make test   — set up, then lint and run the test suite
# Setting up is idempotent: Debian packages are installed only when missing,
# the venv is rebuilt only when setup.cfg or pyproject.toml change.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := python3 python3-venv python3-dev gcc libportaudio2 ffmpeg \
	mosquitto mosquitto-clients espeak-ng pulseaudio pulseaudio-utils \
	libasound2-plugins sox openssl portaudio19-dev chromium chromium-driver picocom tmux fuse3 \
	systemd-container
DEMO_OUT ?= demo-out
# The voice-note prompts, synthesised with espeak-ng at install time.
PROMPTS := $(VENV)/share/custody/prompts
# The simulated officer's phrases (hardware/sim/voices.py), likewise.
SIM_VOICES := $(VENV)/share/custody/sim-voices

.PHONY: setup system venv prompts sim-voices demo test test-slow bench lint clean

setup: system venv prompts sim-voices

system:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@echo "building $(VENV): the Python packages (a minute or two on a fresh machine)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,pyaudio]'
	touch $@

prompts: $(PROMPTS)/manifest.json

$(PROMPTS)/manifest.json: device/prompts.py $(VENV)/.installed
	$(PY) -m device.prompts build $(PROMPTS)
	@touch $@

sim-voices: $(SIM_VOICES)/manifest.json

$(SIM_VOICES)/manifest.json: hardware/sim/voices.py hardware/sim/sounds.py $(VENV)/.installed
	$(PY) -m hardware.sim.voices build $(SIM_VOICES)
	@touch $@

# The whole shift of two devices (docs/examples/two-device-shift.toml), narrated:
# markers, a battery shutdown and the voice note, an exemption, a full store,
# both devices docking at once with the run's own Mosquitto and dock; then the
# attestations, custody verify of the archive, where the files are, what next.
demo: setup
	rm -rf $(DEMO_OUT)
	$(VENV)/bin/custody demo --out $(DEMO_OUT) --scenario docs/examples/two-device-shift.toml

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q

test-slow: setup
	$(VENV)/bin/pytest -q -m slow

bench: setup
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(DEMO_OUT) *.egg-info .pytest_cache .ruff_cache
