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
# A typo in the plugin's config is caught by `hookd check`.
sed -i 's/"greeting"/"greting"/' "$tmp/hookd.json"
if out=$("$tmp/prefix/bin/hookd" check -c "$tmp/hookd.json" 2>&1); then
  echo "hookd check accepted an unknown key"; exit 1
fi
echo "$out" | grep -q "plugins\[0\].config.greting: unknown key" || { echo "unexpected: $out"; exit 1; }
echo "SDK OK: hello_plugin built with find_package and pkg-config, loaded by hookd check"
