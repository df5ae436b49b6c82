#!/usr/bin/env bash
# The whole test suite: installs the outside programs some tests drive (curl, Chromium and its
# WebDriver, nginx, Prometheus, wrk and, when missing, python3-venv, systemd and kubectl from apt;
# moto's S3 server, s3cmd, Selenium and kubernetes-validate from PyPI into .venv/), then runs
# every test, those behind the `external` feature included.
#
# Plain `cargo test` runs everything that needs only Rust. A test whose outside program is
# missing fails loudly; it never skips. Arguments go to cargo test: `scripts/test.sh --test it
# replicas::` runs one module of the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package
declare -A APT_PACKAGES=(
  [curl]=curl
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [kill]=procps
  [nginx]=nginx-light
  # deploy/: systemd-analyze verifies the unit; kubectl (with kustomize v5: the machine image's
  # package, as Debian's own kubernetes-client is too old) renders the Kubernetes base.
  [systemd-analyze]=systemd
  [kubectl]=kubectl
  # tests/it/prometheus.rs: promtool lints /metrics, a Prometheus server scrapes it (same package).
  [promtool]=prometheus
  # tests/it/fleet.rs: a new process takes over a port under load without a failed request.
  [wrk]=wrk
)

missing=()
for program in "${!APT_PACKAGES[@]}"; do
  # nginx lives in /usr/sbin, outside an ordinary user's PATH.
  command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] ||
    missing+=("${APT_PACKAGES[$program]}")
done
# `python3 -m venv` needs ensurepip, which Debian and Ubuntu ship apart, in python3-venv.
if ! command -v python3 >/dev/null 2>&1; then
  missing+=(python3 python3-venv)
elif ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    sudo=sudo
  else
    sudo=
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python programs go into a repo-local virtualenv (git-ignored), never into the system. Selenium
# drives Chromium (through Debian's chromedriver) for the admin panel's browser test.
PY_PACKAGES=("moto[server]" s3cmd selenium kubernetes-validate)
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/s3cmd ] ||
  [ ! -x .venv/bin/kubernetes-validate ] ||
  ! .venv/bin/python -c 'import selenium' 2>/dev/null; then
  echo "test.sh: installing ${PY_PACKAGES[*]} into .venv/"
  # A virtualenv made before python3-venv was installed has no pip: make it again.
  if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    python3 -m venv --clear .venv
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

cargo test --features external "$@"
# The load benchmark's programs are a package of their own (benches/Cargo.toml), with tests of
# their own; run with the whole suite, not when arguments pick some tests.
if [ $# -eq 0 ]; then
  cargo test --manifest-path benches/Cargo.toml --target-dir target --bins
fi
