#!/usr/bin/env bash
# Fails when a file under src/ imports a module its layer may not use (README.md, "Layers").
#
# The layers, lowest first; each may use those before it, never one after it:
#   cors  <-  s3  <-  config  <-  rules  <-  gateway  <-  cli
# tls, watch and metrics are leaves: any layer above cors may use them, and they use nothing
# but cors, s3 and each other. loadtest uses cors and tls, and only cli uses it.
#
# Every path that starts with `crate::` counts, wherever it is: `use crate::a::b;`, grouped
# `use crate::{a, b::{c, d}};` (over several lines too) and inline `crate::a::f()`. Comments do
# not count. Prints `FILE:LINE: <layer> may not import <layer>` for each and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

find src -name '*.rs' ! -path src/main.rs ! -path src/lib.rs | sort | xargs awk '
BEGIN {
  rank["cors"] = 0; rank["s3"] = 1; rank["config"] = 2
  rank["rules"] = 3; rank["gateway"] = 4; rank["cli"] = 5
  leaf["tls"] = 1; leaf["watch"] = 1; leaf["metrics"] = 1
  bad = 0
}

function layer_of(path,    parts) {
  split(path, parts, "/")
  sub(/\.rs$/, "", parts[2])
  return parts[2]
}

function allowed(from, to) {
  if (from == to) return 1
  if (to == "loadtest") return from == "cli"
  if (from == "loadtest") return to == "cors" || to == "tls"
  if (from in leaf) return to == "cors" || to == "s3" || (to in leaf)
  if (to in leaf) return from != "cors"
  if (!(from in rank) || !(to in rank)) return 0
  return rank[to] < rank[from]
}

function check(to) {
  if (to == "self" || to == "") return
  if (!allowed(layer, to)) {
    printf "%s:%d: %s may not import %s\n", FILENAME, FNR, layer, to
    bad = 1
  }
}

FNR == 1 { layer = layer_of(FILENAME); depth = 0 }

{
  line = $0
  # Comments: whole-line ones, and a trailing one after code (not the `//` of a URL).
  if (line ~ /^[ \t]*\/\//) next
  sub(/[ \t]\/\/.*$/, "", line)

  i = 1
  n = length(line)
  while (i <= n) {
    if (depth > 0) {
      # Inside `crate::{ ... }`: a name that starts an item at the top level is a module.
      c = substr(line, i, 1)
      if (c == "{") { depth++; expect = 0; i++; continue }
      if (c == "}") { depth--; i++; continue }
      if (c == ",") { if (depth == 1) expect = 1; i++; continue }
      if (expect && depth == 1 && match(substr(line, i), /^[A-Za-z_][A-Za-z0-9_]*/)) {
        check(substr(line, i, RLENGTH))
        expect = 0
        i += RLENGTH
        continue
      }
      i++
      continue
    }
    rest = substr(line, i)
    if (!match(rest, /(^|[^A-Za-z0-9_$])crate::/)) break
    i += RSTART - 1 + RLENGTH
    after = substr(line, i)
    if (substr(after, 1, 1) == "{") {
      depth = 1
      expect = 1
      i++
    } else if (match(after, /^[A-Za-z_][A-Za-z0-9_]*/)) {
      check(substr(after, 1, RLENGTH))
      i += RLENGTH
    }
  }
}

END { exit bad }
' || exit 1
