#!/usr/bin/env bash
# The load benchmark: corsgate beside nginx and a bare hyper server, on this machine, in one run.
#
#   benches/load/run.sh            # full run: 3 rounds of 6 s per measurement, ~8-10 minutes
#   benches/load/run.sh --quick    # 1 round of 3 s, ~2 minutes
#
# Options: --rounds N, --duration SECONDS, --no-build (reuse the release binaries),
# --only LIST (comma-separated scenario names, see below), --keep (keep the scratch directory
# with every server's log and every raw load-generator output).
# Environment: CORSGATE_BENCH_PORT (first of the 22 loopback ports used, default 18080),
# CARGO_TARGET_DIR (where the release binaries are built), RUST_LOG (corsgate's log filter;
# default: access log off, as nginx's is in nginx.conf),
# CORSGATE_BIN (measure this corsgate binary instead, e.g. an older build, beside the same baselines),
# CORSGATE_BENCH_IDLE_CONNECTIONS (connections held by idle-connections, default 10000: corsgate's
# default server.limits.max_connections).
#
# What it does, all on 127.0.0.1 and nowhere else:
#  1. installs what is missing (apt: nginx-light, wrk, nghttp2-client for h2load, curl,
#     util-linux for taskset), non-interactively; nothing when all is there;
#  2. builds the release binaries: corsgate, and bare_hyper, static_origin, attack, idle and relay
#     (the package benches/Cargo.toml);
#  3. starts static_origin (the origin), corsgate with benches/fixtures/cors.xml, corsgate with a
#     generated 100-rule configuration whose matching rule is last, nginx with benches/load/nginx.conf
#     (ports rewritten; h1 and h2c on two ports, as Debian's nginx 1.22 needs), and bare_hyper
#     (a constant answer: the ceiling for a hyper-based server), and nginx with
#     benches/load/nginx-plain.conf (a hand-written CORS block), and two relays in front of the
#     origin that only move bytes (copy and splice, for get-1g). Servers are pinned to core 0;
#     the load generators and the origin to core 1 (except in get-1g-shared); the open-file limit
#     is raised to 65536 (or the hard limit, if that cannot be raised) for idle-connections;
#  4. checks every CORS server with `corsgate loadtest` (h1 and h2): zero mismatches, or stop;
#  5. measures each scenario, servers alternating within each round, rounds repeated, and
#     prints one table of medians: req/s, p50, p99, the server's CPU time per request (utime +
#     stime from /proc/PID/stat over the run, all threads and worker processes), and the ratios
#     to nginx and to bare hyper measured in the same run.
#
# Scenarios (--only names):
#  h1-32, h1-256   preflight over HTTP/1.1 keep-alive, 32 and 256 connections (wrk)
#  h2              preflight over cleartext h2, 32 connections x 10 streams (h2load)
#  rules-100       the same preflight against 100 rules whose matching rule is the last one
#  flood           preflights from a new random Origin every time (the preflight cache's worst case)
#  get-1k          proxied 1 KiB GET with an Origin (decorated), closed loop (wrk), then open loop at
#                  one fixed rate for both servers (`corsgate loadtest --rate`, latency from the
#                  intended send time) so p99 is compared at the same rate
#  plain-nginx     preflights (as h1-32) and proxied 1 KiB GETs (as get-1k) against corsgate and
#                  against nginx-plain.conf, the plainest CORS proxy written by hand (a static
#                  origin map, preflights answered 204 with constant headers, proxy_pass over
#                  kept-alive upstream connections), alternating; rows plain-preflight and
#                  plain-get. Its answers are its own (204, constant headers, no rule evaluated):
#                  a floor for what a CORS proxy costs, not a peer passing `corsgate loadtest`
#  get-1g          proxied 1 GiB GET (curl): throughput from the origin directly, through corsgate
#                  and through nginx (nginx.conf's proxy_pass, default proxy buffering), with each
#                  proxy's peak RSS (VmHWM, reset before each transfer) and CPU time, in two
#                  placements: get-1g, the origin on core 1 beside curl and the proxy alone on
#                  core 0; get-1g-shared, the origin moved to core 0 beside the proxy and curl
#                  alone on core 1 (the origin competes with the proxy, not with the client);
#                  beside them two relays that parse nothing and only move bytes, relay-copy
#                  (read/write through a 408 KiB buffer, what corsgate's origin client reads at
#                  most) and relay-splice (splice(2) through a pipe): what the kernel allows
#  reload          preflights (as h1-32) against a corsgate whose rules file is rewritten, alternating
#                  between two documents, and which gets a SIGHUP, every 100 ms; beside the same
#                  instance measured without reloads just before (reload-steady); failed requests
#                  and reloads done are counted
#  attack          preflights (as h1-32) and proxied 1 KiB GETs (as get-1k) against a corsgate
#                  instance while the `attack` program holds 1,000 slowloris connections, 200 slow
#                  uploads and one HTTP/2 connection fanning out stalled uploads against it; beside
#                  the same instance measured unattacked just before (attack-calm-*); its peak RSS
#                  and open descriptors under attack
#  metrics         preflights (as h1-32) against a corsgate instance with its admin listener on,
#                  so every request is counted for /metrics, beside the main instance (admin off:
#                  nothing counted), alternating
#  access-log      preflights (as h1-32) against a corsgate instance and an nginx whose access logs
#                  are on (each one's default format, to a file), beside the main instances (logs
#                  off), alternating; same answers
#  idle            corsgate's RSS after start and one request, and after the whole load
#  idle-connections  RSS per idle keep-alive connection: the `idle` program holds 10,000
#                  connections, each after one answered preflight, against a fresh corsgate (the
#                  main instance's arguments), bare hyper and nginx (nginx.conf, its worker's RSS)
#                  in turn; (VmRSS with them - VmRSS before) / connections, and the ratios
#  generator       the load generators themselves (server on core 0, generator on core 1): wrk
#                  vs `corsgate loadtest` on h1 and h2load vs `corsgate loadtest --http2` on h2,
#                  against a bare hyper whose one answer is right for every request drawn, then
#                  `--threads 2`, then https against corsgate's TLS listener; req/s and the
#                  generator's CPU per request, in a table of its own
#
# The machine is small and shared: medians of alternating runs are the figures to read, and CPU
# time per request is steadier than req/s.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

ROUNDS=3
DURATION=6
BUILD=1
KEEP=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) ROUNDS=1; DURATION=3 ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --no-build) BUILD=0 ;;
    --only) ONLY=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

# --- 1. tools -------------------------------------------------------------------------------
declare -A APT_PACKAGES=([nginx]=nginx-light [wrk]=wrk [h2load]=nghttp2-client [curl]=curl
  [taskset]=util-linux)
missing=()
for program in "${!APT_PACKAGES[@]}"; do
  command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] ||
    missing+=("${APT_PACKAGES[$program]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "run.sh: installing ${missing[*]}"
  sudo=; [ "$(id -u)" -ne 0 ] && sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$(nproc --all)" -lt 2 ]; then
  echo "run.sh: needs 2 cores (servers on core 0, load generators on core 1)" >&2
  exit 2
fi

# --- 2. binaries ----------------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet --bin corsgate
  # The load tools are a package of their own (benches/Cargo.toml), built into the same target.
  cargo build --release --quiet --manifest-path benches/Cargo.toml --target-dir "$TARGET" \
    --bin bare_hyper --bin static_origin --bin attack --bin idle --bin relay
fi
CORSGATE=${CORSGATE_BIN:-$TARGET/release/corsgate}
BARE=$TARGET/release/bare_hyper
ORIGIN_BIN=$TARGET/release/static_origin
ATTACK_BIN=$TARGET/release/attack
IDLE_BIN=$TARGET/release/idle
RELAY_BIN=$TARGET/release/relay
for b in "$CORSGATE" "$BARE" "$ORIGIN_BIN" "$ATTACK_BIN" "$IDLE_BIN" "$RELAY_BIN"; do
  [ -x "$b" ] || { echo "run.sh: $b missing (drop --no-build)" >&2; exit 2; }
done

# --- 3. servers -----------------------------------------------------------------------------
# idle-connections holds 10,000 connections against one server at a time: every server started
# here inherits this limit (corsgate would raise its soft limit to the hard one by itself; nginx
# and bare_hyper do not). Where even root may not raise the hard limit, the soft one goes up to it.
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 65536 ]; then
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
TMP=$(mktemp -d /tmp/corsgate-bench.XXXXXX)
# nginx's workers drop root for nobody and buffer large proxied answers in temp files under $TMP
# (get-1g): they must be able to enter it.
chmod 711 "$TMP"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$KEEP" = 1 ]; then echo "run.sh: logs and raw outputs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

BASE=${CORSGATE_BENCH_PORT:-18080}
P_GATE=$BASE P_BARE=$((BASE + 1)) P_NGINX=$((BASE + 2)) P_NGINX_H2=$((BASE + 3))
P_GATE100=$((BASE + 4)) P_RELOAD=$((BASE + 5)) P_ATTACK=$((BASE + 6)) P_ORIGIN=$((BASE + 10))
P_GATE_LOG=$((BASE + 7)) P_GATE_METRICS=$((BASE + 8)) P_NGINX_LOG=$((BASE + 9))
P_NGINX_LOG_H2=$((BASE + 11)) P_METRICS_ADMIN=$((BASE + 12))
# BASE + 13 and 14: the generator scenario's own servers.
P_PLAIN=$((BASE + 15)) P_IDLE_GATE=$((BASE + 16)) P_IDLE_BARE=$((BASE + 17))
P_IDLE_NGINX=$((BASE + 18)) P_IDLE_NGINX_H2=$((BASE + 19))
P_RELAY_COPY=$((BASE + 20)) P_RELAY_SPLICE=$((BASE + 21))
for port in $P_GATE $P_BARE $P_NGINX $P_NGINX_H2 $P_GATE100 $P_RELOAD $P_ATTACK $P_ORIGIN \
  $P_GATE_LOG $P_GATE_METRICS $P_NGINX_LOG $P_NGINX_LOG_H2 $P_METRICS_ADMIN $P_PLAIN \
  $P_IDLE_GATE $P_IDLE_BARE $P_IDLE_NGINX $P_IDLE_NGINX_H2 $P_RELAY_COPY $P_RELAY_SPLICE; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run.sh: port $port is in use (set CORSGATE_BENCH_PORT)" >&2
    exit 2
  fi
done

wait_port() {
  local port=$1 name=$2 i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: $name did not listen on $port; its log:" >&2
  cat "$TMP/$name.log" >&2
  exit 1
}

# start NAME CORE COMMAND...: runs it pinned to CORE, logs to $TMP/NAME.log, records its pid.
declare -A PID_OF
start() {
  local name=$1 core=$2
  shift 2
  taskset -c "$core" "$@" >"$TMP/$name.log" 2>&1 &
  PID_OF[$name]=$!
  PIDS+=($!)
}

# The 100-rule configuration: 99 wildcard-origin rules that the benchmark's origin does not
# match, then benches/fixtures/cors.xml's rule, so the answer is the same as with that file.
RULES100=$TMP/cors-100.xml
{
  echo '<CORSConfiguration>'
  for i in $(seq 1 99); do
    echo "<CORSRule><AllowedOrigin>https://*.tenant$i.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod><AllowedHeader>x-amz-*</AllowedHeader><MaxAgeSeconds>3000</MaxAgeSeconds></CORSRule>"
  done
  sed -n '/<CORSRule>/,/<\/CORSRule>/p' benches/fixtures/cors.xml
  echo '</CORSConfiguration>'
} >"$RULES100"
"$CORSGATE" check "$RULES100" >/dev/null

sed -e "s/127\.0\.0\.1:8082/127.0.0.1:$P_NGINX/; s/127\.0\.0\.1:8083/127.0.0.1:$P_NGINX_H2/" \
  -e "s/127\.0\.0\.1:8090/127.0.0.1:$P_ORIGIN/" -e "s#/tmp/corsgate-bench-nginx#$TMP/nginx#g" \
  benches/load/nginx.conf >"$TMP/nginx.conf"

ORIGIN_URL=http://127.0.0.1:$P_ORIGIN
# nginx.conf has `access_log off`; corsgate gets the same unless RUST_LOG says otherwise.
export RUST_LOG=${RUST_LOG:-info,corsgate::access=off}
start origin 1 "$ORIGIN_BIN" --listen "127.0.0.1:$P_ORIGIN" --size 1024 --cors
wait_port "$P_ORIGIN" origin
start corsgate 0 "$CORSGATE" serve --listen "127.0.0.1:$P_GATE" --origin "$ORIGIN_URL" \
  --rules benches/fixtures/cors.xml --admin off
start corsgate100 0 "$CORSGATE" serve --listen "127.0.0.1:$P_GATE100" --origin "$ORIGIN_URL" \
  --rules "$RULES100" --admin off
# The reload scenario's own instance: two documents giving the benchmark's preflight the same
# status (they differ in MaxAgeSeconds), swapped into place by rename as editors and deploy
# tools do.
RELOAD_RULES=$TMP/reload.xml
cp benches/fixtures/cors.xml "$TMP/reload-a.xml"
sed 's#<MaxAgeSeconds>[0-9]*</MaxAgeSeconds>#<MaxAgeSeconds>600</MaxAgeSeconds>#' benches/fixtures/cors.xml \
  >"$TMP/reload-b.xml"
cmp -s "$TMP/reload-a.xml" "$TMP/reload-b.xml" && { echo "run.sh: reload documents are identical" >&2; exit 2; }
cp "$TMP/reload-a.xml" "$RELOAD_RULES"
start reload 0 "$CORSGATE" serve --listen "127.0.0.1:$P_RELOAD" --origin "$ORIGIN_URL" \
  --rules "$RELOAD_RULES" --admin off
# The attack scenario's own instance, with the default deadlines and limits except the origin
# connection cap, sized above what the attack's uploads hold at once (1,000 slowloris heads hold
# none; 200 slow uploads and the h2 fan-out's 100 streams hold one each) so that the well-behaved
# clients' GETs measure the deadlines and caps at work, not a full origin pool.
cat >"$TMP/attack.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_ATTACK"]
[server.limits]
origin_connections = 1024
[admin]
listen = "off"
[[route]]
hosts = ["*"]
origin = "$ORIGIN_URL"
rules = { file = "$ROOT/benches/fixtures/cors.xml" }
EOF
start attacked 0 "$CORSGATE" serve --config "$TMP/attack.toml"
# The metrics scenario's instance: the main one's rules, with an admin listener, which turns
# counting on.
start metrics 0 "$CORSGATE" serve --listen "127.0.0.1:$P_GATE_METRICS" --origin "$ORIGIN_URL" \
  --rules benches/fixtures/cors.xml --admin "127.0.0.1:$P_METRICS_ADMIN"
# The access-log scenario's instances: corsgate and nginx as the main ones, each with its access
# log on in its default format, written to a file as a production server's is.
cat >"$TMP/log.toml" <<EOF
[server]
listen = ["127.0.0.1:$P_GATE_LOG"]
[admin]
listen = "off"
[log]
access = true
access_file = "$TMP/corsgate-access.log"
[[route]]
hosts = ["*"]
origin = "$ORIGIN_URL"
rules = { file = "$ROOT/benches/fixtures/cors.xml" }
EOF
start corsgate-log 0 env RUST_LOG=info "$CORSGATE" serve --config "$TMP/log.toml"
sed -e "s/127\.0\.0\.1:$P_NGINX /127.0.0.1:$P_NGINX_LOG /; s/127\.0\.0\.1:$P_NGINX_H2 /127.0.0.1:$P_NGINX_LOG_H2 /" \
  -e "s#$TMP/nginx#$TMP/nginxlog#g" -e "s#^\( *\)access_log off;#\1access_log $TMP/nginx-access.log;#" \
  "$TMP/nginx.conf" >"$TMP/nginx-log.conf"
grep -q "access_log $TMP/nginx-access.log;" "$TMP/nginx-log.conf" ||
  { echo "run.sh: could not turn nginx's access log on" >&2; exit 2; }
start nginx 0 "$NGINX" -e stderr -p "$TMP" -c "$TMP/nginx.conf"
# The plain-nginx scenario's baseline: the hand-written CORS block of nginx-plain.conf.
sed -e "s/127\.0\.0\.1:8084/127.0.0.1:$P_PLAIN/; s/127\.0\.0\.1:8090/127.0.0.1:$P_ORIGIN/" \
  -e "s#/tmp/corsgate-bench-nginx-plain#$TMP/nginxplain#g" benches/load/nginx-plain.conf \
  >"$TMP/nginx-plain.conf"
start plain-nginx 0 "$NGINX" -e stderr -p "$TMP" -c "$TMP/nginx-plain.conf"
start bare 0 "$BARE" --listen "127.0.0.1:$P_BARE" --rules benches/fixtures/cors.xml
start nginx-log 0 "$NGINX" -e stderr -p "$TMP" -c "$TMP/nginx-log.conf"
# get-1g's byte movers: no HTTP, no decoration, what a user-space proxy can reach at best. copy
# reads at most what corsgate's origin client does (its default --buffer).
start relay-copy 0 "$RELAY_BIN" --listen "127.0.0.1:$P_RELAY_COPY" --origin "127.0.0.1:$P_ORIGIN" \
  --mode copy
start relay-splice 0 "$RELAY_BIN" --listen "127.0.0.1:$P_RELAY_SPLICE" \
  --origin "127.0.0.1:$P_ORIGIN" --mode splice
wait_port "$P_GATE" corsgate
wait_port "$P_GATE100" corsgate100
wait_port "$P_RELOAD" reload
wait_port "$P_ATTACK" attacked
wait_port "$P_NGINX" nginx
wait_port "$P_NGINX_H2" nginx
wait_port "$P_BARE" bare
wait_port "$P_GATE_METRICS" metrics
wait_port "$P_GATE_LOG" corsgate-log
wait_port "$P_NGINX_LOG" nginx-log
wait_port "$P_PLAIN" plain-nginx
wait_port "$P_RELAY_COPY" relay-copy
wait_port "$P_RELAY_SPLICE" relay-splice

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process, its threads and its child processes (nginx's worker).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    # Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    if [ -r "/proc/$pid/stat" ]; then
      set -- $(sed 's/^.*) //' "/proc/$pid/stat")
      total=$((total + ${12} + ${13}))
    fi
  done
  echo "$total"
}
rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# nginx's one worker process (nginx.conf: worker_processes 1), once the master has started it.
nginx_worker() {
  local worker i
  for i in $(seq 1 100); do
    worker=$(pgrep -P "$1" | head -1 || true)
    [ -n "$worker" ] && { echo "$worker"; return 0; }
    sleep 0.1
  done
  echo "run.sh: nginx $1 started no worker" >&2
  exit 1
}

# idle RSS right after start and one request, before any load.
IDLE_RSS_FRESH=$(curl -s -o /dev/null -X OPTIONS -H 'Origin: https://app.example.com' \
  -H 'Access-Control-Request-Method: PUT' "http://127.0.0.1:$P_GATE/a" && sleep 1 &&
  rss_kib "${PID_OF[corsgate]}" VmRSS)

# --- 4. correctness -------------------------------------------------------------------------
check() {
  local name=$1 url=$2 rules=$3
  shift 3
  if ! taskset -c 1 "$CORSGATE" loadtest "$url" --rules "$rules" -d 2s --json "$@" \
    >"$TMP/check-$name.json" 2>"$TMP/check-$name.err"; then
    echo "run.sh: $name gives wrong answers (corsgate loadtest):" >&2
    cat "$TMP/check-$name.json" "$TMP/check-$name.err" >&2
    exit 1
  fi
  # The top-level "requests" sorts after "by_kind", whose entries have their own.
  echo "   $name: ok ($(grep -o '"requests": *[0-9]*' "$TMP/check-$name.json" | tail -1 | grep -o '[0-9]*$') requests, 0 mismatches)"
}
if [ -z "$ONLY" ] || wanted h1-32 || wanted h2 || wanted rules-100; then
  echo "== correctness: corsgate loadtest against each CORS server (zero mismatches required)"
  check corsgate-h1 "http://127.0.0.1:$P_GATE/" benches/fixtures/cors.xml -c 8
  check corsgate-h2 "http://127.0.0.1:$P_GATE/" benches/fixtures/cors.xml --http2 -c 2
  check corsgate-100-rules "http://127.0.0.1:$P_GATE100/" "$RULES100" -c 8
  check nginx-h1 "http://127.0.0.1:$P_NGINX/" benches/fixtures/cors.xml -c 8
  check nginx-h2 "http://127.0.0.1:$P_NGINX_H2/" benches/fixtures/cors.xml --http2 -c 2
fi
if wanted metrics; then
  check corsgate-metrics "http://127.0.0.1:$P_GATE_METRICS/" benches/fixtures/cors.xml -c 8
fi
if wanted access-log; then
  check corsgate-log "http://127.0.0.1:$P_GATE_LOG/" benches/fixtures/cors.xml -c 8
  check nginx-log "http://127.0.0.1:$P_NGINX_LOG/" benches/fixtures/cors.xml -c 8
  [ -s "$TMP/corsgate-access.log" ] && [ -s "$TMP/nginx-access.log" ] ||
    { echo "run.sh: an access log stayed empty" >&2; exit 1; }
fi

if wanted plain-nginx; then
  # nginx-plain.conf gives its own answers (204, constant headers), so `corsgate loadtest` would
  # count mismatches: check only that it answers as a hand-written CORS block does.
  plain_head() { curl -s -o /dev/null -D - -H 'Origin: https://app.example.com' "$@" | tr -d '\r'; }
  plain_pf=$(plain_head -X OPTIONS -H 'Access-Control-Request-Method: PUT' \
    -H 'Access-Control-Request-Headers: content-type' "http://127.0.0.1:$P_PLAIN/uploads/photo.jpg")
  plain_get=$(plain_head "http://127.0.0.1:$P_PLAIN/size/1024/object.bin")
  if ! grep -q '^HTTP/1.1 204' <<<"$plain_pf" ||
    ! grep -qi '^access-control-allow-origin: https://app.example.com$' <<<"$plain_pf" ||
    ! grep -q '^HTTP/1.1 200' <<<"$plain_get" ||
    [ "$(grep -ci '^access-control-allow-origin: https://app.example.com$' <<<"$plain_get")" != 1 ]; then
    echo "run.sh: plain-nginx does not answer as nginx-plain.conf says:" >&2
    printf '%s\n\n%s\n' "$plain_pf" "$plain_get" >&2
    exit 1
  fi
  echo "   plain-nginx: 204 preflight and decorated GET (its own answers: not checked against the rules)"
fi

# --- 5. measurements ------------------------------------------------------------------------
PREFLIGHT_PATH=/uploads/photo.jpg
cat >"$TMP/preflight.lua" <<EOF
wrk.method = "OPTIONS"
wrk.path = "$PREFLIGHT_PATH"
wrk.headers["Origin"] = "https://app.example.com"
wrk.headers["Access-Control-Request-Method"] = "PUT"
wrk.headers["Access-Control-Request-Headers"] = "content-type"
EOF
# A new random Origin for every request: the request is cut once around a placeholder, so each
# one costs the generator a concatenation, not a formatting.
cat >"$TMP/flood.lua" <<EOF
local head, tail
function init(args)
  math.randomseed(os.time())
  local r = wrk.format("OPTIONS", "$PREFLIGHT_PATH", {
    ["Origin"] = "https://u@@.example.com",
    ["Access-Control-Request-Method"] = "PUT",
    ["Access-Control-Request-Headers"] = "content-type",
  })
  head, tail = r:match("^(.-)@@(.*)$")
end
function request()
  return head .. math.random(0, 2147483647) .. "-" .. math.random(0, 2147483647) .. tail
end
EOF
cat >"$TMP/get.lua" <<EOF
wrk.method = "GET"
wrk.path = "/size/1024/object.bin"
wrk.headers["Origin"] = "https://app.example.com"
EOF

RESULTS=$TMP/results.tsv   # scenario server round rps p50_us p99_us cpu_us_per_req extra
: >"$RESULTS"

# to_us VALUE: wrk's "123.45us" / "1.20ms" / "1.00s" in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 }
    else print "nan" }'
}

# cpu_per_req PID TICKS_BEFORE REQUESTS: microseconds of server CPU per request since TICKS_BEFORE.
cpu_per_req() {
  local after
  after=$(cpu_ticks "$1")
  awk -v t=$((after - $2)) -v hz="$CLK_TCK" -v n="$3" 'BEGIN { printf "%.2f", (n > 0 ? t / hz * 1e6 / n : 0) }'
}

# wrk_run SCENARIO SERVER ROUND PID URL LUA CONNECTIONS [SECONDS]
wrk_run() {
  local scenario=$1 server=$2 round=$3 pid=$4 url=$5 lua=$6 conns=$7 secs=${8:-$DURATION}
  local out=$TMP/wrk-$scenario-$server-$round.txt before rps p50 p99 requests errors
  before=$(cpu_ticks "$pid")
  taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$lua" "$url" >"$out" 2>&1
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  requests=$(awk '/requests in/ { print $1 }' "$out")
  p50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$out")")
  errors=$(awk '/Non-2xx|Socket errors/' "$out")
  if [ -n "$errors" ]; then echo "   warning: $server $scenario: $errors" >&2; fi
  [ "$round" = warm ] && return 0
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$scenario" "$server" "$round" "$rps" "$p50" "$p99" \
    "$(cpu_per_req "$pid" "$before" "$requests")" >>"$RESULTS"
}

# h2load_run SCENARIO SERVER ROUND PID URL
h2load_run() {
  local scenario=$1 server=$2 round=$3 pid=$4 url=$5 secs=${6:-$DURATION}
  local out=$TMP/h2load-$scenario-$server-$round.txt log=$TMP/h2load.log before rps requests
  before=$(cpu_ticks "$pid")
  taskset -c 1 h2load -t1 -c32 -m10 -D "$secs" --log-file="$log" \
    -H ':method: OPTIONS' -H 'origin: https://app.example.com' \
    -H 'access-control-request-method: PUT' -H 'access-control-request-headers: content-type' \
    "$url$PREFLIGHT_PATH" >"$out" 2>&1
  [ "$round" = warm ] && return 0
  rps=$(awk '/^finished in/ { print $4 }' "$out")
  requests=$(awk '/^requests:/ { print $6 }' "$out")
  if ! grep -q ' 0 failed, 0 errored' "$out"; then
    echo "   warning: $server $scenario: $(grep '^requests:' "$out")" >&2
  fi
  # The log holds one line per request: start time, status, duration in microseconds.
  read -r p50 p99 < <(cut -f3 "$log" | sort -n | awk '{ v[NR] = $1 } END {
    printf "%s %s\n", v[int(NR * 0.50) + 1], v[int(NR * 0.99) + 1] }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$scenario" "$server" "$round" "$rps" "$p50" "$p99" \
    "$(cpu_per_req "$pid" "$before" "$requests")" >>"$RESULTS"
}

# loadtest_rate SCENARIO SERVER ROUND PID URL RATE: open loop at RATE req/s, GETs only.
loadtest_rate() {
  local scenario=$1 server=$2 round=$3 pid=$4 url=$5 rate=$6
  local out=$TMP/loadtest-$scenario-$server-$round.json before
  before=$(cpu_ticks "$pid")
  taskset -c 1 "$CORSGATE" loadtest "$url" --rules benches/fixtures/cors.xml --mix get=100 -c 32 \
    --rate "$rate" -d "${DURATION}s" --json >"$out" 2>"$out.err" ||
    echo "   warning: $server $scenario: loadtest reported errors or mismatches ($out)" >&2
  # With GETs only, every "requests"/"p50"/"p99" in the report (overall or by kind) is the same.
  local rps requests p50 p99
  rps=$(grep -o '"rps": *[0-9.]*' "$out" | head -1 | grep -o '[0-9.]*$')
  requests=$(grep -o '"requests": *[0-9]*' "$out" | tail -1 | grep -o '[0-9]*$')
  p50=$(grep -o '"p50": *[0-9]*' "$out" | head -1 | grep -o '[0-9]*$')
  p99=$(grep -o '"p99": *[0-9]*' "$out" | head -1 | grep -o '[0-9]*$')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t-\n' "$scenario" "$server" "$round" "$rps" "$p50" "$p99" \
    "$(cpu_per_req "$pid" "$before" "$requests")" >>"$RESULTS"
}

G=http://127.0.0.1:$P_GATE
N=http://127.0.0.1:$P_NGINX
N2=http://127.0.0.1:$P_NGINX_H2
B=http://127.0.0.1:$P_BARE
G100=http://127.0.0.1:$P_GATE100
GR=http://127.0.0.1:$P_RELOAD
GA=http://127.0.0.1:$P_ATTACK
GM=http://127.0.0.1:$P_GATE_METRICS
GL=http://127.0.0.1:$P_GATE_LOG
NL=http://127.0.0.1:$P_NGINX_LOG
NP=http://127.0.0.1:$P_PLAIN
pid() { echo "${PID_OF[$1]}"; }

# reloader: until killed, every 100 ms, swaps the other document into place and sends SIGHUP.
# One perl process (perl-base is part of every Debian system) rather than a shell loop, whose
# cp/mv/sleep forks would take CPU from the load generator on the same core.
reloader() {
  exec perl -e '
    my ($pid, $target, @docs) = @ARGV;
    my @text = map { local $/; open(my $f, "<", $_) or die "$_: $!"; scalar <$f> } @docs;
    for (my $i = 0; ; $i++) {
      open(my $out, ">", "$target.tmp") or die "$target.tmp: $!";
      print $out $text[($i + 1) % 2];
      close($out) or die "$target.tmp: $!";
      rename("$target.tmp", $target) or die "$target: $!";
      kill("HUP", $pid);
      select(undef, undef, undef, 0.1);
    }' "$(pid reload)" "$RELOAD_RULES" "$TMP/reload-a.xml" "$TMP/reload-b.xml"
}
reloads_logged() { grep -c 'rules reloaded' "$TMP/reload.log" || true; }

echo "== measuring: $ROUNDS round(s) of ${DURATION}s per server and scenario"
for round in warm $(seq 1 "$ROUNDS"); do
  secs=$DURATION
  [ "$round" = warm ] && secs=1
  [ "$round" != warm ] && echo "   round $round"
  # Alternate the servers' order from round to round.
  if [ "$round" != warm ] && [ $((round % 2)) = 0 ]; then order="bare nginx corsgate"; else order="corsgate nginx bare"; fi
  for server in $order; do
    case $server in corsgate) url=$G ;; nginx) url=$N ;; bare) url=$B ;; esac
    case $server in corsgate) p=$(pid corsgate) ;; nginx) p=$(pid nginx) ;; bare) p=$(pid bare) ;; esac
    if wanted h1-32; then wrk_run h1-32 "$server" "$round" "$p" "$url" "$TMP/preflight.lua" 32 "$secs"; fi
    if wanted h1-256; then wrk_run h1-256 "$server" "$round" "$p" "$url" "$TMP/preflight.lua" 256 "$secs"; fi
    if wanted h2; then
      h2url=$url; [ "$server" = nginx ] && h2url=$N2
      h2load_run h2 "$server" "$round" "$p" "$h2url" "$secs"
    fi
    if wanted flood; then wrk_run flood "$server" "$round" "$p" "$url" "$TMP/flood.lua" 32 "$secs"; fi
  done
  if wanted rules-100; then
    wrk_run rules-100 corsgate "$round" "$(pid corsgate100)" "$G100" "$TMP/preflight.lua" 32 "$secs"
  fi
  if wanted reload && [ "$round" != warm ]; then
    wrk_run reload-steady corsgate "$round" "$(pid reload)" "$GR" "$TMP/preflight.lua" 32 "$secs"
    before_reloads=$(reloads_logged)
    reloader &
    reloader_pid=$!
    taskset -cp 1 "$reloader_pid" >/dev/null
    wrk_run reload corsgate "$round" "$(pid reload)" "$GR" "$TMP/preflight.lua" 32 "$secs"
    kill "$reloader_pid"; wait "$reloader_pid" 2>/dev/null || true
    sleep 0.3
    failed=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i } END { print n + 0 }' \
      "$TMP/wrk-reload-corsgate-$round.txt")
    printf '%s\t%s\t%s\n' "$round" "$(($(reloads_logged) - before_reloads))" "$failed" >>"$TMP/reload-stats"
  fi
  if wanted attack && [ "$round" != warm ]; then
    ap=$(pid attacked)
    wrk_run attack-calm-preflight corsgate "$round" "$ap" "$GA" "$TMP/preflight.lua" 32 "$secs"
    wrk_run attack-calm-get corsgate "$round" "$ap" "$GA" "$TMP/get.lua" 32 "$secs"
    echo 5 >"/proc/$ap/clear_refs"
    taskset -c 1 "$ATTACK_BIN" --target "127.0.0.1:$P_ATTACK" --slowloris 1000 --slow-uploads 200 \
      --h2-streams 200 >"$TMP/attack-$round.txt" 2>&1 &
    attacker=$!
    # The attackers connect at once; give them the time to be established and stalled.
    sleep 3
    printf '%s\t%s\n' "$round" "$(ls "/proc/$ap/fd" | wc -l)" >>"$TMP/attack-fds"
    wrk_run attack-preflight corsgate "$round" "$ap" "$GA" "$TMP/preflight.lua" 32 "$secs"
    wrk_run attack-get corsgate "$round" "$ap" "$GA" "$TMP/get.lua" 32 "$secs"
    printf '%s\t%s\n' "$round" "$(rss_kib "$ap" VmHWM)" >>"$TMP/attack-rss"
    kill "$attacker"; wait "$attacker" 2>/dev/null || true
  fi
  if wanted metrics; then
    # Alternate which instance goes first from round to round.
    order="corsgate metrics"; [ "$round" != warm ] && [ $((round % 2)) = 0 ] && order="metrics corsgate"
    for instance in $order; do
      case $instance in corsgate) url=$G ;; metrics) url=$GM ;; esac
      wrk_run metrics "$instance" "$round" "$(pid "$instance")" "$url" "$TMP/preflight.lua" 32 "$secs"
    done
  fi
  if wanted access-log; then
    order="corsgate corsgate-log nginx nginx-log"
    [ "$round" != warm ] && [ $((round % 2)) = 0 ] && order="nginx-log nginx corsgate-log corsgate"
    for instance in $order; do
      case $instance in
        corsgate) url=$G ;; corsgate-log) url=$GL ;; nginx) url=$N ;; nginx-log) url=$NL ;;
      esac
      wrk_run access-log "$instance" "$round" "$(pid "$instance")" "$url" "$TMP/preflight.lua" 32 "$secs"
    done
    # The logs grow by a hundred megabytes a round: keep the scratch directory small (both
    # servers append, so truncating in place is safe).
    : >"$TMP/corsgate-access.log"
    : >"$TMP/nginx-access.log"
  fi
  if wanted plain-nginx; then
    order="corsgate plain-nginx"; [ "$round" != warm ] && [ $((round % 2)) = 0 ] && order="plain-nginx corsgate"
    for instance in $order; do
      case $instance in corsgate) url=$G ;; plain-nginx) url=$NP ;; esac
      wrk_run plain-preflight "$instance" "$round" "$(pid "$instance")" "$url" "$TMP/preflight.lua" 32 "$secs"
      wrk_run plain-get "$instance" "$round" "$(pid "$instance")" "$url" "$TMP/get.lua" 32 "$secs"
    done
  fi
  if wanted get-1k; then
    for server in corsgate nginx; do
      case $server in corsgate) url=$G ;; nginx) url=$N ;; esac
      wrk_run get-1k "$server" "$round" "$(pid $server)" "$url" "$TMP/get.lua" 32 "$secs"
    done
  fi
done

median() { # median of column $2 for scenario $1 server $3
  awk -F'\t' -v s="$1" -v srv="$3" -v c="$2" '$1 == s && $2 == srv { print $c }' "$RESULTS" |
    sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# The fixed rate for the open-loop GET comparison: 70% of the slower server's closed-loop median,
# so both servers are below saturation and the p99s compare like with like.
if wanted get-1k; then
  rate=$(awk -v a="$(median get-1k 4 corsgate)" -v b="$(median get-1k 4 nginx)" \
    'BEGIN { m = a < b ? a : b; printf "%d", m * 0.7 }')
  echo "   open loop: proxied 1 KiB GET at $rate req/s"
  for round in $(seq 1 "$ROUNDS"); do
    loadtest_rate get-1k-rate corsgate "$round" "$(pid corsgate)" "$G/" "$rate"
    loadtest_rate get-1k-rate nginx "$round" "$(pid nginx)" "$N/" "$rate"
  done
fi

# 1 GiB from the origin directly, through corsgate, through nginx (nginx.conf's proxy_pass,
# nginx's default proxy buffering) and through the two relays (copy and splice: the kernel's
# ceiling for a proxy); each server's peak RSS over each transfer and its CPU time.
# Two placements: get-1g as everything else here (the origin on core 1 with curl, the server
# alone on core 0); get-1g-shared with the origin moved to core 0, where it competes with the
# server for one core while curl has core 1 to itself.
BIG=/size/1073741824/big.bin
: >"$TMP/get-1g-incomplete"
if wanted get-1g; then
  gp=$(pid corsgate)
  np=$(nginx_worker "$(pid nginx)")
  op=$(pid origin)
  for placement in get-1g get-1g-shared; do
    echo "   proxied 1 GiB GET ($placement)"
    [ "$placement" = get-1g-shared ] && taskset -a -cp 0 "$op" >/dev/null
    for round in $(seq 1 "$ROUNDS"); do
      order="origin corsgate nginx relay-copy relay-splice"
      [ $((round % 2)) = 0 ] && order="relay-splice relay-copy nginx corsgate origin"
      for server in $order; do
        case $server in
          origin) url=$ORIGIN_URL hp= ;;
          corsgate) url=$G hp=$gp ;;
          nginx) url=$N hp=$np ;;
          relay-copy) url=http://127.0.0.1:$P_RELAY_COPY hp=$(pid relay-copy) ;;
          relay-splice) url=http://127.0.0.1:$P_RELAY_SPLICE hp=$(pid relay-splice) ;;
        esac
        [ -n "$hp" ] && echo 5 >"/proc/$hp/clear_refs" && before=$(cpu_ticks "$(pid "$server")")
        read -r code size speed < <(taskset -c 1 curl -s -o /dev/null \
          -H 'Origin: https://app.example.com' -w '%{http_code} %{size_download} %{speed_download}\n' \
          "$url$BIG" || true) || true
        if [ "${code:-}" != 200 ] || [ "${size:-}" != 1073741824 ]; then
          echo "   warning: $server $placement: status ${code:-none}, ${size:-0} bytes: not counted" >&2
          printf '%s\t%s\n' "$placement" "$server" >>"$TMP/get-1g-incomplete"
          continue
        fi
        extra=- cpu=-
        if [ -n "$hp" ]; then
          extra=$(rss_kib "$hp" VmHWM)
          cpu=$(awk -v t=$(($(cpu_ticks "$(pid "$server")") - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
        fi
        printf '%s\t%s\t%s\t%s\t-\t-\t%s\t%s\n' "$placement" "$server" "$round" "${speed:-0}" "$cpu" "$extra" >>"$RESULTS"
      done
    done
    taskset -a -cp 1 "$op" >/dev/null
  done
fi

# RSS per idle keep-alive connection: corsgate (as the main instance), bare hyper and nginx (as
# the main ones) each hold IDLE_N connections that have had one preflight answered; VmRSS after
# minus before (nginx: its worker's), over IDLE_N. Each server is a fresh process per round, on
# ports of its own, so that memory freed by earlier load or rounds and kept by the allocator
# cannot absorb the connections; one preflight is answered before "before", so that what is
# set up on first use is not counted as the connections'.
IDLE_N=${CORSGATE_BENCH_IDLE_CONNECTIONS:-10000}
if wanted idle-connections; then
  echo "   idle keep-alive connections: $IDLE_N per server"
  sed -e "s/127\.0\.0\.1:$P_NGINX /127.0.0.1:$P_IDLE_NGINX /; s/127\.0\.0\.1:$P_NGINX_H2 /127.0.0.1:$P_IDLE_NGINX_H2 /" \
    -e "s#$TMP/nginx#$TMP/nginxidle#g" -e "s/worker_connections [0-9]*;/worker_connections $((IDLE_N + 1024));/" \
    "$TMP/nginx.conf" >"$TMP/nginx-idle.conf"
  : >"$TMP/idle-fds"
  for round in $(seq 1 "$ROUNDS"); do
    order="corsgate bare nginx"; [ $((round % 2)) = 0 ] && order="nginx bare corsgate"
    for server in $order; do
      name=idle-$server-$round
      case $server in
        corsgate) port=$P_IDLE_GATE
          start "$name" 0 "$CORSGATE" serve --listen "127.0.0.1:$port" --origin "$ORIGIN_URL" \
            --rules benches/fixtures/cors.xml --admin off ;;
        bare) port=$P_IDLE_BARE
          start "$name" 0 "$BARE" --listen "127.0.0.1:$port" --rules benches/fixtures/cors.xml ;;
        nginx) port=$P_IDLE_NGINX
          start "$name" 0 "$NGINX" -e stderr -p "$TMP" -c "$TMP/nginx-idle.conf" ;;
      esac
      wait_port "$port" "$name"
      mp=$(pid "$name")
      [ "$server" = nginx ] && mp=$(nginx_worker "$mp")
      curl -s -o /dev/null -X OPTIONS -H 'Origin: https://app.example.com' \
        -H 'Access-Control-Request-Method: PUT' -H 'Access-Control-Request-Headers: content-type' \
        "http://127.0.0.1:$port$PREFLIGHT_PATH"
      before=$(rss_kib "$mp" VmRSS)
      out=$TMP/idle-$server-$round.out
      : >"$out"
      taskset -c 1 "$IDLE_BIN" --target "127.0.0.1:$port" --connections "$IDLE_N" --hold 300s \
        >"$out" 2>&1 &
      client=$!
      # Until every connection has had its answer; the client exits at once if one fails.
      until grep -q '^ready' "$out"; do
        if ! kill -0 "$client" 2>/dev/null; then
          echo "run.sh: the idle client against $server failed:" >&2
          cat "$out" >&2
          exit 1
        fi
        sleep 0.1
      done
      after=$(rss_kib "$mp" VmRSS)
      printf '%s\t%s\t%s\n' "$server" "$round" "$(ls "/proc/$mp/fd" | wc -l)" >>"$TMP/idle-fds"
      kill "$client"; wait "$client" 2>/dev/null || true
      kill "$(pid "$name")"; wait "$(pid "$name")" 2>/dev/null || true
      printf 'idle-connections\t%s\t%s\t-\t-\t-\t-\t%s\n' "$server" "$round" \
        "$(awk -v a="$after" -v b="$before" -v n="$IDLE_N" 'BEGIN { printf "%.3f", (a - b) / n }')" >>"$RESULTS"
    done
  done
fi
sleep 1
IDLE_RSS_AFTER=$(rss_kib "$(pid corsgate)" VmRSS)

# --- the table ------------------------------------------------------------------------------
echo
echo "corsgate load benchmark: medians of $ROUNDS round(s) x ${DURATION}s; servers on core 0, load on core 1"
printf '%-12s %-9s %10s %9s %9s %10s %8s %8s  %s\n' scenario server 'req/s' p50 p99 'cpu/req' \
  '×nginx' '×bare' 'notes'
fmt_us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else if (v >= 1000) printf "%.2fms", v / 1000; else printf "%.0fus", v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
row() {
  local s=$1 srv=$2 note=${3:-} rps p50 p99 cpu
  rps=$(median "$s" 4 "$srv")
  [ -z "$rps" ] && return 0
  p50=$(median "$s" 5 "$srv"); p99=$(median "$s" 6 "$srv"); cpu=$(median "$s" 7 "$srv")
  local base_s=$s
  printf '%-12s %-9s %10.0f %9s %9s %8.2fus %8s %8s  %s\n' "$s" "$srv" "$rps" "$(fmt_us "$p50")" \
    "$(fmt_us "$p99")" "$cpu" "$(ratio "$rps" "$(median "$base_s" 4 nginx)")" \
    "$(ratio "$rps" "$(median "$base_s" 4 bare)")" "$note"
}
cpu_ratio() { ratio "$(median "$2" 7 "$3")" "$(median "$1" 7 corsgate)"; }
for s in h1-32 h1-256 h2; do
  for srv in corsgate nginx bare; do
    note=
    if [ "$srv" = corsgate ]; then
      note="cpu: ×nginx $(cpu_ratio "$s" "$s" nginx), ×bare $(cpu_ratio "$s" "$s" bare)"
    fi
    row "$s" "$srv" "$note"
  done
done
if [ -n "$(median rules-100 4 corsgate)" ]; then
  printf '%-12s %-9s %10.0f %9s %9s %8.2fus %8s %8s  %s\n' rules-100 corsgate \
    "$(median rules-100 4 corsgate)" "$(fmt_us "$(median rules-100 5 corsgate)")" \
    "$(fmt_us "$(median rules-100 6 corsgate)")" "$(median rules-100 7 corsgate)" \
    "$(ratio "$(median rules-100 4 corsgate)" "$(median h1-32 4 nginx)")" \
    "$(ratio "$(median rules-100 4 corsgate)" "$(median h1-32 4 bare)")" \
    "×1-rule (h1-32): req/s $(ratio "$(median rules-100 4 corsgate)" "$(median h1-32 4 corsgate)"), cpu $(ratio "$(median h1-32 7 corsgate)" "$(median rules-100 7 corsgate)")"
fi
for srv in corsgate nginx bare; do
  note=
  if [ "$srv" = corsgate ]; then
    note="×1-rule (h1-32): req/s $(ratio "$(median flood 4 corsgate)" "$(median h1-32 4 corsgate)"), cpu $(ratio "$(median h1-32 7 corsgate)" "$(median flood 7 corsgate)")"
  fi
  row flood "$srv" "$note"
done
row get-1k corsgate "cpu: ×nginx $(cpu_ratio get-1k get-1k nginx)"
row get-1k nginx
row get-1k-rate corsgate "open loop, same rate for both; p99 ×nginx $(ratio "$(median get-1k-rate 6 corsgate)" "$(median get-1k-rate 6 nginx)")"
row get-1k-rate nginx
for placement in get-1g get-1g-shared; do
  [ -z "$(median "$placement" 4 corsgate)" ] && continue
  for srv in origin corsgate nginx relay-copy relay-splice; do
    case $placement:$srv in
      get-1g:origin) note="direct; the origin and curl on core 1" ;;
      get-1g-shared:origin) note="direct; the origin on core 0 (the servers' core), curl on core 1" ;;
      *)
        hwm=$(awk -F'\t' -v p="$placement" -v s="$srv" '$1 == p && $2 == s { if ($8 > m) m = $8 } END { print m }' "$RESULTS")
        note="×direct $(ratio "$(median "$placement" 4 "$srv")" "$(median "$placement" 4 origin)")"
        [ "$srv" = corsgate ] && note="$note, ×nginx $(ratio "$(median "$placement" 4 corsgate)" "$(median "$placement" 4 nginx)"), ×relay-copy $(ratio "$(median "$placement" 4 corsgate)" "$(median "$placement" 4 relay-copy)")"
        note="$note, peak RSS $(awk -v k="$hwm" 'BEGIN { printf "%.1f MiB", k / 1024 }')$( [ "$srv" = nginx ] && echo ' (worker)'), cpu $(median "$placement" 7 "$srv") s/GiB" ;;
    esac
    incomplete=$(awk -F'\t' -v p="$placement" -v s="$srv" '$1 == p && $2 == s { n++ } END { print n + 0 }' "$TMP/get-1g-incomplete")
    [ "$incomplete" -gt 0 ] && note="$note; $incomplete incomplete transfer(s) not counted"
    printf '%-13s %-12s %5.0fMB/s %9s %9s %10s %8s %8s  %s\n' "$placement" "$srv" \
      "$(awk -v b="$(median "$placement" 4 "$srv")" 'BEGIN { print b / 1048576 }')" - - - - - "$note"
  done
done
if [ -n "$(median plain-preflight 4 corsgate)" ]; then
  for s in plain-preflight plain-get; do
    row "$s" corsgate "req/s ×plain-nginx $(ratio "$(median "$s" 4 corsgate)" "$(median "$s" 4 plain-nginx)"), cpu ×plain-nginx $(cpu_ratio "$s" "$s" plain-nginx)"
    row "$s" plain-nginx "nginx-plain.conf: 204, constant headers; cannot pass corsgate loadtest's check"
  done
fi
if [ -n "$(median idle-connections 8 corsgate)" ]; then
  for srv in corsgate bare nginx; do
    kib=$(median idle-connections 8 "$srv")
    fds=$(awk -F'\t' -v s="$srv" '$1 == s { if ($3 > m) m = $3 } END { print m }' "$TMP/idle-fds")
    note="$(awk -v k="$kib" 'BEGIN { printf "%.2f KiB", k }') RSS per idle connection ($IDLE_N held, $fds descriptors)"
    [ "$srv" = nginx ] && note="$note, the worker's"
    [ "$srv" = corsgate ] && note="$note; ×bare $(ratio "$kib" "$(median idle-connections 8 bare)"), ×nginx $(ratio "$kib" "$(median idle-connections 8 nginx)")"
    printf '%-12s %-9s %10s %9s %9s %10s %8s %8s  %s\n' idle-conns "$srv" - - - - - - "$note"
  done
fi
if [ -n "$(median reload 4 corsgate)" ]; then
  row reload-steady corsgate "the same instance with no reload: the next row's baseline"
  row reload corsgate "×steady $(ratio "$(median reload 4 corsgate)" "$(median reload-steady 4 corsgate)"), \
$(awk -F'\t' '{ r += $2; f += $3 } END { printf "%d reloads, %d failed requests over all rounds", r, f }' "$TMP/reload-stats")"
fi
if [ -n "$(median attack-preflight 4 corsgate)" ]; then
  row attack-calm-preflight corsgate "the attacked instance before the attack: the next row's baseline"
  row attack-preflight corsgate "×calm $(ratio "$(median attack-preflight 4 corsgate)" "$(median attack-calm-preflight 4 corsgate)")"
  row attack-calm-get corsgate "the attacked instance before the attack: the next row's baseline"
  row attack-get corsgate "×calm $(ratio "$(median attack-get 4 corsgate)" "$(median attack-calm-get 4 corsgate)"), \
peak RSS $(awk -F'\t' '{ if ($2 > m) m = $2 } END { printf "%.1f MiB", m / 1024 }' "$TMP/attack-rss"), \
descriptors under attack $(awk -F'\t' '{ if ($2 > m) m = $2 } END { print m }' "$TMP/attack-fds")"
fi
if [ -n "$(median metrics 4 metrics)" ]; then
  row metrics corsgate "admin off: nothing counted; the next row's baseline"
  row metrics metrics "counted for /metrics: req/s ×uncounted $(ratio "$(median metrics 4 metrics)" "$(median metrics 4 corsgate)"), cpu ×uncounted $(ratio "$(median metrics 7 metrics)" "$(median metrics 7 corsgate)") (goal: req/s ≥ 0.97)"
fi
if [ -n "$(median access-log 4 corsgate-log)" ]; then
  row access-log corsgate "log off"
  row access-log corsgate-log "log on: ×log-off $(ratio "$(median access-log 4 corsgate-log)" "$(median access-log 4 corsgate)") (goal ≥ 0.85), ×nginx-log $(ratio "$(median access-log 4 corsgate-log)" "$(median access-log 4 nginx-log)") (goal ≥ 1.0)"
  row access-log nginx "log off"
  row access-log nginx-log "log on: ×log-off $(ratio "$(median access-log 4 nginx-log)" "$(median access-log 4 nginx)")"
fi
printf '%-12s %-9s %10s %9s %9s %10s %8s %8s  %s\n' idle corsgate - - - - - - \
  "RSS $(awk -v a="$IDLE_RSS_FRESH" -v b="$IDLE_RSS_AFTER" 'BEGIN { printf "%.1f MiB after start, %.1f MiB after the load", a / 1024, b / 1024 }')"
# --- generator: the load generators measured ----------------------------------------------
# gen_run NAME KIND ARGS...: runs one generator on core 1 and appends "NAME req/s cpu-us/req" to
# $TMP/gen.tsv; KIND (wrk, h2load, loadtest) says how to read its output. The generator's CPU is
# read from /proc/PID/stat as cpu_ticks reads a server's, but from the cutime and cstime of the
# shell that waited for it, since the generator's own entry is gone once it exits.
gen_run() {
  local name=$1 kind=$2 out=$TMP/gen-$1-$round.out ticks requests secs
  shift 2
  ticks=$(sh -c '"$@" >"$0" 2>&1; sed "s/^.*) //" /proc/$$/stat' "$out" taskset -c 1 "$@" |
    awk '{ print $14 + $15 }')
  case $kind in
    wrk) requests=$(awk '/requests in/ { print $1 }' "$out")
      secs=$(awk '/requests in/ { sub(/s,$/, "", $4); print $4 }' "$out") ;;
    h2load) requests=$(awk '/^requests:/ { print $8 }' "$out")
      secs=$(awk '/^finished in/ { sub(/s,$/, "", $3); print $3 }' "$out") ;;
    loadtest) requests=$(grep -o '"requests": *[0-9]*' "$out" | tail -1 | grep -o '[0-9]*$')
      secs=$(grep -o '"duration_s": *[0-9.]*' "$out" | grep -o '[0-9.]*$')
      if grep -oE '"(mismatches|errors)": *[0-9]+' "$out" | grep -qvE ': *0$'; then
        echo "   warning: generator $name: mismatches or errors ($out)" >&2
      fi ;;
  esac
  [ "$round" = warm ] && return 0
  awk -v n="$name" -v r="${requests:-0}" -v s="${secs:-0}" -v t="${ticks:-0}" -v hz="$CLK_TCK" \
    'BEGIN { printf "%s\t%.0f\t%.2f\n", n, (s > 0 ? r / s : 0), (r > 0 ? t / hz * 1e6 / r : 0) }' \
    >>"$TMP/gen.tsv"
}

generator() {
  local P_GEN_BARE=$((BASE + 13)) P_GEN_TLS=$((BASE + 14)) port
  for port in $P_GEN_BARE $P_GEN_TLS; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "run.sh: port $port is in use (set CORSGATE_BENCH_PORT)" >&2
      exit 2
    fi
  done
  # Rules whose every allowed preflight gets the same answer (no AllowedHeader: only preflights
  # without Access-Control-Request-Headers are allowed), so that bare_hyper's one constant answer
  # is right for every request `corsgate loadtest` draws and every check passes.
  printf '%s\n' '<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>' \
    '<AllowedMethod>PUT</AllowedMethod><AllowedMethod>POST</AllowedMethod>' \
    '<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3000</MaxAgeSeconds>' \
    '</CORSRule></CORSConfiguration>' >"$TMP/generator.xml"
  printf '%s\n' 'wrk.method = "OPTIONS"' "wrk.path = \"$PREFLIGHT_PATH\"" \
    'wrk.headers["Origin"] = "https://app.example.com"' \
    'wrk.headers["Access-Control-Request-Method"] = "PUT"' >"$TMP/generator.lua"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$TMP/generator-key.pem" -out "$TMP/generator-cert.pem" 2>/dev/null
  start gen-bare 0 "$BARE" --listen "127.0.0.1:$P_GEN_BARE" --rules "$TMP/generator.xml" \
    --request-headers ""
  start gen-tls 0 "$CORSGATE" serve --listen "127.0.0.1:$P_GEN_TLS" --origin "$ORIGIN_URL" \
    --rules benches/fixtures/cors.xml --admin off --tls-cert "$TMP/generator-cert.pem" \
    --tls-key "$TMP/generator-key.pem"
  wait_port "$P_GEN_BARE" gen-bare
  wait_port "$P_GEN_TLS" gen-tls
  local GB=http://127.0.0.1:$P_GEN_BARE GT=https://127.0.0.1:$P_GEN_TLS round secs d lt h2
  echo "== generator: $ROUNDS round(s) of ${DURATION}s per generator; server on core 0, generator on core 1"
  : >"$TMP/gen.tsv"
  for round in warm $(seq 1 "$ROUNDS"); do
    secs=$DURATION
    [ "$round" = warm ] && secs=1
    d=${secs}s
    lt=("$CORSGATE" loadtest --json -d "$d" --mix preflight-allowed=100 -c 32)
    h2=(h2load -t1 -c32 -m10 -D "$secs" -H ':method: OPTIONS'
      -H 'origin: https://app.example.com' -H 'access-control-request-method: PUT')
    gen_run h1-wrk wrk wrk -t1 -c32 -d"$d" -s "$TMP/generator.lua" "$GB"
    gen_run h1-loadtest loadtest "${lt[@]}" --threads 1 --rules "$TMP/generator.xml" "$GB/"
    gen_run h1-loadtest-2t loadtest "${lt[@]}" --threads 2 --rules "$TMP/generator.xml" "$GB/"
    gen_run h2-h2load h2load "${h2[@]}" "$GB$PREFLIGHT_PATH"
    gen_run h2-loadtest loadtest "${lt[@]}" --threads 1 --http2 --streams 10 \
      --rules "$TMP/generator.xml" "$GB/"
    gen_run h2-loadtest-2t loadtest "${lt[@]}" --threads 2 --http2 --streams 10 \
      --rules "$TMP/generator.xml" "$GB/"
    gen_run tls-h1-wrk wrk wrk -t1 -c32 -d"$d" -s "$TMP/generator.lua" "$GT"
    gen_run tls-h1-loadtest loadtest "${lt[@]}" --threads 1 --insecure --rules benches/fixtures/cors.xml "$GT/"
    gen_run tls-h2-h2load h2load "${h2[@]}" "$GT$PREFLIGHT_PATH"
    gen_run tls-h2-loadtest loadtest "${lt[@]}" --threads 1 --insecure --http2 --streams 10 \
      --rules benches/fixtures/cors.xml "$GT/"
  done
  gmed() { # median of column $2 for generator row $1
    awk -F'\t' -v n="$1" -v c="$2" '$1 == n { print $c }' "$TMP/gen.tsv" | sort -g |
      awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
  }
  echo
  echo "load generators: medians of $ROUNDS round(s) x ${DURATION}s; server on core 0, generator on core 1"
  printf '%-16s %-30s %10s %10s %7s %7s\n' row generator 'req/s' 'gen cpu' '×rps' '×cpu'
  local name base label
  for name in h1-wrk h1-loadtest h1-loadtest-2t h2-h2load h2-loadtest h2-loadtest-2t \
    tls-h1-wrk tls-h1-loadtest tls-h2-h2load tls-h2-loadtest; do
    case $name in
      tls-h1-*) base=tls-h1-wrk ;;
      tls-h2-*) base=tls-h2-h2load ;;
      h1-*) base=h1-wrk ;;
      h2-*) base=h2-h2load ;;
    esac
    case $name in
      *-wrk) label="wrk -t1 (checks nothing)" ;;
      *-h2load) label="h2load -t1 (checks status)" ;;
      *-2t) label="corsgate loadtest --threads 2" ;;
      *) label="corsgate loadtest (checks all)" ;;
    esac
    [ -z "$(gmed "$name" 2)" ] && continue
    printf '%-16s %-30s %10.0f %8.2fus %7s %7s\n' "$name" "$label" "$(gmed "$name" 2)" \
      "$(gmed "$name" 3)" "$(ratio "$(gmed "$name" 2)" "$(gmed "$base" 2)")" \
      "$(ratio "$(gmed "$name" 3)" "$(gmed "$base" 3)")"
  done
  echo "h1-*, h2-*: against bare hyper; tls-*: against corsgate's TLS listener (the server is the"
  echo "bottleneck there: compare gen cpu). gen cpu: the generator's user+system CPU per request;"
  echo "×rps, ×cpu: to wrk (h1) or h2load (h2) in the same round; --threads 2 shares core 1."
}
if wanted generator; then generator; fi
echo
echo "cpu/req: the server's user+system CPU time per request (all its threads and processes)."
echo "Raw results: $RESULTS$( [ "$KEEP" = 1 ] || echo ' (pass --keep to keep them)')"
