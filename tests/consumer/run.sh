#!/usr/bin/env bash
# Installs a flashattn build into a temporary prefix, then configures, builds and runs the consumer
# project against it through find_package.
#   usage: run.sh <flashattn build dir> [config] [c++ compiler]
set -euo pipefail

build_dir=$(cd "$1" && pwd)
config=${2:-Release}
cxx=${3:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/flashattn-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build_dir" --config "$config" --prefix "$tmp/prefix"

configure=(-S "$here" -B "$tmp/build" -DCMAKE_BUILD_TYPE="$config"
  -DCMAKE_PREFIX_PATH="$tmp/prefix")
if [[ -n "$cxx" ]]; then configure+=(-DCMAKE_CXX_COMPILER="$cxx"); fi
cmake "${configure[@]}"
cmake --build "$tmp/build" --config "$config"

bin="$tmp/build"
if [[ -d "$bin/$config" ]]; then bin="$bin/$config"; fi  # multi-config generators
"$bin/consumer"
"$bin/consumer_c"
