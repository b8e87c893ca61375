#!/usr/bin/env bash
# Object-store servers on 127.0.0.1 for the lake: an S3 server (moto's server mode, from PyPI)
# and the Azure Storage emulator (Azurite, from npm).
#
#   scripts/object-store.sh install              Azurite into .services/azurite (moto comes with the dev extra)
#   scripts/object-store.sh start-s3 DIR PORT    an S3 server; prints its endpoint (http://127.0.0.1:PORT)
#   scripts/object-store.sh start-azurite DIR PORT
#                                                Azurite's blob service with its data under DIR; prints the endpoint
#   scripts/object-store.sh stop DIR             stop the server started under DIR (its data stays)
#
# Point the lake at one with lake.root and lake.storage (see the README's "The lake on object
# storage"). Tests start and stop their own servers through this script (tests/engine/storage/).
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
VENV_BIN=${VENV_BIN:-"$HERE/.venv/bin"}
AZURITE_DIR="$HERE/.services/azurite"
AZURITE_VERSION=3.37.0

wait_port() {  # port seconds
  for _ in $(seq 1 "$(( $2 * 4 ))"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  return 1
}

install() {
  if [ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then return 0; fi
  command -v npm >/dev/null || { echo "error: Azurite needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 2; }
  echo "installing Azurite $AZURITE_VERSION from npm..." >&2
  mkdir -p "$AZURITE_DIR"
  (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION" >/dev/null)
}

started() {  # dir pid port name
  echo "$2" >"$1/server.pid"
  if ! wait_port "$3" 60; then
    echo "error: $4 did not come up on port $3; see $1/server.log" >&2
    tail -n 20 "$1/server.log" >&2
    stop "$1"
    exit 1
  fi
  echo "http://127.0.0.1:$3"
}

start_s3() {
  local dir port
  dir=$(mkdir -p "$1" && cd "$1" && pwd); port=$2
  setsid "$VENV_BIN/moto_server" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 &
  started "$dir" $! "$port" "the S3 server (moto)"
}

start_azurite() {
  local dir port
  dir=$(mkdir -p "$1" && cd "$1" && pwd); port=$2
  install
  mkdir -p "$dir/data"
  setsid "$AZURITE_DIR/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$dir/data" --skipApiVersionCheck --loose --silent >"$dir/server.log" 2>&1 &
  started "$dir" $! "$port" "Azurite"
}

stop() {
  local dir
  dir=$(cd "$1" && pwd)
  [ -f "$dir/server.pid" ] || return 0
  kill -TERM -- "-$(cat "$dir/server.pid")" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$(cat "$dir/server.pid")" 2>/dev/null || true
  rm -f "$dir/server.pid"
}

case "${1:-}" in
  install) install ;;
  start-s3) shift; start_s3 "$@" ;;
  start-azurite) shift; start_azurite "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
