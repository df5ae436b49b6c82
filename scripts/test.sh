#!/usr/bin/env bash
# The whole test suite: installs the outside programs some tests drive (curl, Chromium), then
# runs every test, those behind the `external` feature included.
#
# Plain `cargo test` runs everything that needs only Rust. A test whose outside program is
# missing fails loudly; it never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

# program -> Debian package
declare -A APT_PACKAGES=(
  [curl]=curl
  [chromium]=chromium
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

cargo test --features external "$@"
