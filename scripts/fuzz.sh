#!/usr/bin/env bash
# Fuzzes every input corsgate parses (fuzz/fuzz_targets/): runs each target for SECONDS
# (default 60), one after the other, one libFuzzer job each, and prints a table of executions and
# crashes. Exits non-zero when any target crashed; the crashing input is in fuzz/artifacts/TARGET/
# and is replayed with `cargo +nightly fuzz run -s none -a TARGET fuzz/artifacts/TARGET/crash-...`
# (for `request`, CORSGATE_FUZZ_SHOW=1 prints the exchange).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (installed here when missing) and python3, which
# writes the seed corpora (fuzz/corpus/TARGET/seed-*) and dictionaries from
# tests/data/vectors.json and the configuration examples before every run. Each target's libFuzzer
# output is kept in fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

ALL_TARGETS=(document acrh origin_match config request)
seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: SECONDS must be a positive whole number, not \"$seconds\"" >&2
  exit 2
fi
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  if [ ! -f "fuzz/fuzz_targets/$t.rs" ]; then
    echo "fuzz.sh: no target \"$t\" (targets: ${ALL_TARGETS[*]})" >&2
    exit 2
  fi
done

# --- Tools --------------------------------------------------------------------------------------
need() {
  echo "fuzz.sh: $1" >&2
  exit 2
}
command -v cargo >/dev/null 2>&1 || need "cargo is missing: install Rust with rustup (https://rustup.rs)"
command -v python3 >/dev/null 2>&1 || need "python3 is missing: it writes the seed corpora (apt-get install python3)"
if ! cargo +nightly --version >/dev/null 2>&1; then
  command -v rustup >/dev/null 2>&1 ||
    need "the nightly toolchain is missing and rustup is not installed to get it: cargo-fuzz needs nightly"
  echo "fuzz.sh: installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"
  rustup toolchain install nightly --profile minimal ||
    need "could not install the nightly toolchain (is static.rust-lang.org reachable?); install it by hand: rustup toolchain install nightly --profile minimal"
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz (cargo +nightly install cargo-fuzz --locked)"
  cargo +nightly install cargo-fuzz --locked ||
    need "could not install cargo-fuzz from crates.io; install it by hand: cargo +nightly install cargo-fuzz --locked"
fi

# --- Seeds and dictionaries ---------------------------------------------------------------------
python3 - <<'PY'
import json, pathlib, re
import xml.etree.ElementTree as ET

fuzz = pathlib.Path("fuzz")
vectors = json.loads(pathlib.Path("tests/data/vectors.json").read_text())
configs = vectors["configs"]
cases = vectors["cases"]

def write_seeds(target, seeds):
    d = fuzz / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for i, data in enumerate(seeds):
        (d / f"seed-{i:03}").write_bytes(data if isinstance(data, bytes) else data.encode())

def write_dict(target, tokens):
    d = fuzz / "dict"
    d.mkdir(parents=True, exist_ok=True)
    def quoted(t):
        return '"' + "".join(c if 0x20 <= ord(c) < 0x7f and c not in '"\\' else f"\\x{ord(c):02x}" for c in t) + '"'
    (d / f"{target}.dict").write_text("".join(quoted(t) + "\n" for t in sorted(set(tokens)) if t))

def local(tag):
    return tag.rsplit("}", 1)[-1]

def to_json(xml):
    """The AWS CLI's JSON form of an S3 CORSConfiguration."""
    rules = []
    for rule in ET.fromstring(xml):
        out = {}
        for field in rule:
            name, text = local(field.tag), field.text or ""
            if name == "ID":
                out["ID"] = text
            elif name == "MaxAgeSeconds":
                out["MaxAgeSeconds"] = int(text) if text.isdigit() else text
            else:
                out.setdefault(name + "s", []).append(text)
        rules.append(out)
    return json.dumps({"CORSRules": rules})

def patterns(xml, element):
    return [e.text or "" for e in ET.fromstring(xml).iter() if local(e.tag) == element]

documents = list(configs.values())
for path in ["benches/fixtures/cors.xml", *sorted(map(str, pathlib.Path("config").glob("*.xml")))]:
    documents.append(pathlib.Path(path).read_text())
write_seeds("document", documents + [to_json(d) for d in documents])

acrh = []
for case in cases:
    allowed = patterns(configs[case["config"]], "AllowedHeader") if case.get("config") else []
    for name, value in case["headers"]:
        if name.lower() == "access-control-request-headers":
            acrh.append(value + "\0" + "\n".join(allowed))
write_seeds("acrh", acrh + [
    "Content-Type , x-amz-meta-a,,\tX-Custom\nx-second-line\0x-amz-*\ncontent-type",
    ",".join(["x-amz-meta-a"] * 130) + "\0x-amz-*",
    "\n".join(["x-b,x-c"] * 9) + "\0*",
])

# origin_match reads structured input (`arbitrary`) and has the vectors' origins compiled in.
write_seeds("origin_match", [])

toml_seeds = [pathlib.Path("config/corsgate.toml").read_text()]
toml_seeds.append("""[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[server.timeouts]
connect = "5s"
header_read = "10s"
body_read = "30s"
origin_response = "1m"
send = "60s"
idle = "75s"
shutdown_grace = "30s"
tls_handshake = "10s"
[server.limits]
max_connections = 10000
origin_connections = 256
max_concurrent_streams = 100
[server.preflight_cache]
max_entries = 0
max_bytes = 0
[admin]
listen = "0.0.0.0:9901"
token_env = "CORSGATE_ADMIN_TOKEN"
[[route]]
hosts = ["assets.example.com", "127.0.0.1:8080"]
origin = "https://my-bucket.nyc3.digitaloceanspaces.com/prefix"
rules = { bucket = "my-bucket", poll = "30s", region = "nyc3", access_key_env = "KEY", secret_key_env = "SECRET" }
[[route]]
hosts = ["*"]
origin = "http://127.0.0.1:9000"
s3 = { addressing = "virtual", region = "us-east-1", poll = "30s", max_buckets = 10000, negative_ttl = "60s", max_fetches_per_second = 50, bucket_idle = "5m" }
vary_origin_always = false
preserve_host = true
""")
toml_seeds.append("""[server]
[[server.tls]]
listen = "0.0.0.0:443"
certs = [{ cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" }]
unknown_name = "reject"
[server.redirect]
listen = "0.0.0.0:80"
https_port = 443
[server.http2]
initial_stream_window_size = 1048576
initial_connection_window_size = 2097152
max_concurrent_streams = 100
[server.origin_tls]
roots = "none"
ca_file = "ca.pem"
[[route]]
hosts = ["*"]
origin = "http://127.0.0.1:9000"
""")
write_seeds("config", toml_seeds)

requests = []
for case in cases:
    rules = configs[case["config"]] if case.get("config") else "@none"
    head = f"{case['method']} {case['path']}\n" + "".join(f"{n}: {v}\n" for n, v in case["headers"])
    requests.append(rules + "\0" + head)
    if case.get("config"):
        requests.append(f"@{case['config']}\0" + head)
requests.append("@nobucket\0OPTIONS /\nOrigin: https://a.example\nAccess-Control-Request-Method: GET\n")
requests.append("@none\0GET http://s3.test/bucket/key?cors\nHost: s3.test\nOrigin: https://a.example\n")
write_seeds("request", requests)

origins = sorted({v for c in cases for n, v in c["headers"] if n.lower() == "origin"})
methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH", "get"]
elements = ["CORSConfiguration", "CORSRule", "ID", "AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader", "MaxAgeSeconds"]
xml_tokens = [f"<{e}>" for e in elements] + [f"</{e}>" for e in elements] + [
    '<?xml version="1.0" encoding="UTF-8"?>', 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"',
    "<![CDATA[", "]]>", "&amp;", "&#x2a;", "&lt;", "<!--", "-->", "<!DOCTYPE", "/>"]
json_tokens = ['"CORSRules"', '"ID"', '"AllowedOrigins"', '"AllowedMethods"', '"AllowedHeaders"', '"ExposeHeaders"', '"MaxAgeSeconds"', "\\u0000", "\\r"]
header_names = ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers", "Host",
                "X-Forwarded-For", "Forwarded", "X-Real-IP", "Authorization", "Vary", "content-type", "x-amz-*"]
write_dict("document", xml_tokens + json_tokens + methods + origins + ["*", "https://*."])
write_dict("acrh", [",", ", ", "\t", "*", "\0", "x-amz-", "content-type"])
config_text = "\n".join(toml_seeds)
toml_keys = set(re.findall(r"^#?\s*([a-z_0-9]+)\s*=", config_text, re.M)) | set(re.findall(r"\b([a-z_]+) =", config_text))
tables = set(re.findall(r"^#*\s*(\[\[?[a-z_.0-9]+\]\]?)", config_text, re.M))
write_dict("config", list(toml_keys) + list(tables) + ['"off"', '"*"', '"path"', '"virtual"', '"webpki"', '"system"', '"none"', '"0s"', '"1ms"', "127.0.0.1:0", "[::1]", "/32", "/0"])
write_dict("request", methods + header_names + origins + [f"@{n}" for n in configs] + ["@none", "@nobucket", "\0", "\n", ": ", "http://", "s3.test", "nocors.test", "?cors", "%2F", "/..", "*"])
PY

# --- Build once, then run every target ----------------------------------------------------------
# No sanitizer: the targets are safe Rust, whose bugs are panics (overflow checks and debug
# assertions on), and ASan would halve the executions.
FUZZ_FLAGS=(-s none -a)
mkdir -p fuzz/logs
echo "fuzz.sh: building the targets (log: fuzz/logs/build.log)"
if ! cargo +nightly fuzz build "${FUZZ_FLAGS[@]}" >fuzz/logs/build.log 2>&1; then
  tail -n 40 fuzz/logs/build.log >&2
  need "the fuzz targets do not build (above: the end of fuzz/logs/build.log)"
fi

rows=()
failed=0
for t in "${targets[@]}"; do
  log="fuzz/logs/$t.log"
  extra=()
  [ -s "fuzz/dict/$t.dict" ] && extra+=("-dict=fuzz/dict/$t.dict")
  # ACRH's byte bound (8 KiB) lies beyond libFuzzer's default 4 KiB inputs.
  [ "$t" = acrh ] && extra+=(-max_len=12288)
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "fuzz.sh: $t for ${seconds}s (log: $log)"
  status=0
  cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 ||
    status=$?
  stat() { grep -o "stat::$1: *[0-9]*" "$log" | tail -n 1 | grep -o '[0-9]*$' || true; }
  execs=$(stat number_of_executed_units)
  rate=$(stat average_exec_per_sec)
  crashes=0
  if [ "$status" -ne 0 ]; then
    crashes=1
    failed=1
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -n 1 | sed 's/Test unit written to //' || true)
    echo "fuzz.sh: $t crashed (exit $status): ${artifact:-no input saved, see $log}" >&2
    grep -m 5 -E "panicked at|ERROR: libFuzzer|deadly signal|timeout after" "$log" >&2 || true
  fi
  rows+=("$t ${execs:-?} $crashes ${rate:-?}")
done

echo
printf '%-14s | %12s | %7s | %8s\n' target executions crashes exec/s
printf '%-14s-+-%12s-+-%7s-+-%8s\n' -------------- ------------ ------- --------
for row in "${rows[@]}"; do
  read -r t execs crashes rate <<<"$row"
  printf '%-14s | %12s | %7s | %8s\n' "$t" "$execs" "$crashes" "$rate"
done
exit "$failed"
