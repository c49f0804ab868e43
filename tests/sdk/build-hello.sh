#!/usr/bin/env bash
# Installs hookd to a temporary prefix, builds examples/hello_plugin against the
# installed SDK with find_package and with pkg-config, and loads both builds with
# `hookd check`.  Usage: build-hello.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
test -f "$tmp/prefix/include/hookd/plugin.h"
test -f "$tmp/prefix/lib/pkgconfig/hookd-plugin.pc" || test -f "$tmp/prefix/lib/x86_64-linux-gnu/pkgconfig/hookd-plugin.pc"
libdir=$(dirname "$(find "$tmp/prefix" -name hookd-plugin.pc | head -1)")

cp -r "$src/examples/hello_plugin" "$tmp/hello"
# find_package(hookd)
cmake -S "$tmp/hello" -B "$tmp/hello/build-cmake" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/hello/build-cmake" >/dev/null
test -f "$tmp/hello/build-cmake/hello.so"
# pkg-config
PKG_CONFIG_PATH="$libdir" make -s -C "$tmp/hello" hello.so
test -f "$tmp/hello/hello.so"
# Only the entry point is exported.
exported=$(nm -D --defined-only "$tmp/hello/build-cmake/hello.so" | awk '$2 == "T" {print $3}')
[ "$exported" = "hookd_plugin_entry" ] || { echo "unexpected exports: $exported"; exit 1; }

for dir in "$tmp/hello/build-cmake" "$tmp/hello"; do
  cat > "$tmp/hookd.json" <<JSON
{ "listen": "127.0.0.1:0", "plugin_dirs": ["$dir"],
  "sources": [{ "name": "s", "path": "/s", "verify": { "scheme": "none" } }],
  "plugins": [{ "name": "greeter", "module": "hello", "config": { "greeting": "hi {{eventType}}" } }],
  "routes": [{ "events": ["**"], "to": ["greeter"] }] }
JSON
  "$tmp/prefix/bin/hookd" check -c "$tmp/hookd.json"
done
# The table-driven plugin as its author meets it: `hookd plugins` lists it
# and prints its declared options; `hookd try` runs one delivery.
hookd=$tmp/prefix/bin/hookd
"$hookd" plugins -c "$tmp/hookd.json" | grep -Eq '^hello +1\.1\.0 +1\.1 +logs a greeting' ||
  { echo "hookd plugins does not list hello"; "$hookd" plugins -c "$tmp/hookd.json"; exit 1; }
help=$("$hookd" plugins hello -c "$tmp/hookd.json")
for want in "greeting  (template" "repeat  (int 1..5; default 1)" "shout  (bool; default false)"; do
  echo "$help" | grep -qF "$want" || { echo "hookd plugins hello lacks '$want':"; echo "$help"; exit 1; }
done
sed -i 's/"greeting": "hi {{eventType}}"/"greeting": "hi {{eventType}}", "repeat": 2/' "$tmp/hookd.json"
out=$("$hookd" try -c "$tmp/hookd.json" --instance greeter "$src/examples/payloads/scheduling.smartscheduler.scheduled.json" 2>&1)
[ "$(echo "$out" | grep -c 'hi scheduling.smartscheduler.scheduled')" = 2 ] &&
  echo "$out" | grep -q '^outcome: OK$' || { echo "hookd try: $out"; exit 1; }
# A typo in the plugin's config is caught by `hookd check`, with a hint.
sed -i 's/"greeting"/"greting"/' "$tmp/hookd.json"
if out=$("$hookd" check -c "$tmp/hookd.json" 2>&1); then
  echo "hookd check accepted an unknown key"; exit 1
fi
echo "$out" | grep -q "plugins\[0\].config.greting: unknown key (did you mean 'greeting'?)" ||
  { echo "unexpected: $out"; exit 1; }
# So is a value out of the declared range.
sed -i 's/"greting"/"greeting"/; s/"repeat": 2/"repeat": 9/' "$tmp/hookd.json"
out=$("$hookd" check -c "$tmp/hookd.json" 2>&1) && { echo "repeat 9 accepted"; exit 1; }
echo "$out" | grep -q "plugins\[0\].config.repeat: expected an integer from 1 to 5" ||
  { echo "unexpected: $out"; exit 1; }
echo "SDK OK: table-driven hello_plugin built with find_package and pkg-config, listed by hookd plugins, run by hookd try"
