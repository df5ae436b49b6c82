#!/usr/bin/env bash
# The whole test suite: installs the outside programs some tests drive (curl, Chromium and its
# WebDriver from apt; moto's S3 server, s3cmd and Selenium from PyPI into .venv/), then runs every
# test, those behind the `external` feature included.
#
# Plain `cargo test` runs everything that needs only Rust. A test whose outside program is
# missing fails loudly; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package
declare -A APT_PACKAGES=(
  [curl]=curl
  [chromium]=chromium
  [chromedriver]=chromium-driver
  [kill]=procps
)

missing=()
for program in "${!APT_PACKAGES[@]}"; do
  command -v "$program" >/dev/null 2>&1 || missing+=("${APT_PACKAGES[$program]}")
done
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
PY_PACKAGES=("moto[server]" s3cmd selenium)
if [ ! -x .venv/bin/moto_server ] || [ ! -x .venv/bin/s3cmd ] \
  || ! .venv/bin/python -c 'import selenium' 2>/dev/null; then
  echo "test.sh: installing ${PY_PACKAGES[*]} into .venv/"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

# --- Deployment files (tests/deploy.rs) ---
# systemd-analyze verifies deploy/systemd/corsgate.service; kubectl renders deploy/kubernetes and
# kubernetes-validate checks the result against the API schemas. The base needs a kubectl with
# kustomize v5 (the machine image's): Debian's own kubernetes-client is too old for it.
declare -A DEPLOY_APT_PACKAGES=(
  [systemd-analyze]=systemd
  [kubectl]=kubectl
)
deploy_missing=()
for program in "${!DEPLOY_APT_PACKAGES[@]}"; do
  command -v "$program" >/dev/null 2>&1 || deploy_missing+=("${DEPLOY_APT_PACKAGES[$program]}")
done
if [ ${#deploy_missing[@]} -gt 0 ]; then
  echo "test.sh: installing ${deploy_missing[*]}"
  sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${deploy_missing[@]}" >/dev/null
fi
if [ ! -x .venv/bin/kubernetes-validate ]; then
  echo "test.sh: installing kubernetes-validate into .venv/"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check kubernetes-validate
fi
# --- end of the deployment files' programs ---

cargo test --features external "$@"
