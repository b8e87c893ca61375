#!/usr/bin/env bash
# An MLflow tracking server with a PostgreSQL backend store, on 127.0.0.1 only.
#
#   scripts/tracking-server.sh install                 PostgreSQL from Debian's packages (no-op if present)
#   scripts/tracking-server.sh start DIR [PORT] [PG_PORT] [WORKERS]
#                                                      a private PostgreSQL cluster and `mlflow server` under DIR;
#                                                      prints the tracking URI (http://127.0.0.1:PORT)
#                                                      (MLFLOW_APP: the server's app plugin, default
#                                                      manymodels, the bulk child-run route; empty: plain MLflow;
#                                                      basic-auth: MLflow's users and permissions, its admin
#                                                      password from MLFLOW_AUTH_ADMIN_PASSWORD; clients then
#                                                      send MLFLOW_TRACKING_USERNAME/PASSWORD)
#   scripts/tracking-server.sh stop DIR                stop both, keep the data under DIR
#   scripts/tracking-server.sh destroy DIR             stop both and delete DIR and the data
#
# Set mlflow.tracking_uri in the job config to the printed URI. Tests start and stop their own
# server through this script (tests/engine/test_tracking_server.py).
set -euo pipefail

MLFLOW=${MLFLOW:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/mlflow"}
MLFLOW_APP=${MLFLOW_APP-manymodels}
MLFLOW_PYTHON=${MLFLOW_PYTHON:-"$(dirname "$MLFLOW")/python"}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: installing PostgreSQL needs root (or sudo): run 'apt-get install postgresql' as root" >&2
    exit 2
  fi
}

install() {
  if [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/postgres" ]; then return 0; fi
  echo "installing PostgreSQL from Debian's packages..." >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }
}

# PostgreSQL refuses to run as root: as root, run it as the 'postgres' user the package creates.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# The cluster lives in DIR/pg, or (as root, when the 'postgres' user cannot reach DIR, e.g. a
# private temp folder) in a folder of its own whose path is kept in DIR/pg.path.
pg_dir() {
  if [ -f "$1/pg.path" ]; then cat "$1/pg.path"; return; fi
  local pg="$1/pg"
  mkdir -p "$pg"
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$pg"
    if ! runuser -u postgres -- test -w "$pg"; then
      rmdir "$pg"; pg=$(mktemp -d /tmp/manymodels-pg.XXXXXX); chown postgres "$pg"
    fi
  fi
  echo "$pg" >"$1/pg.path"
  echo "$pg"
}

wait_http() {  # url seconds
  for _ in $(seq 1 "$(( $2 * 2 ))"); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

start() {
  local dir port pg_port workers bin pg
  dir=$(mkdir -p "$1" && cd "$1" && pwd); port=${2:-5000}; pg_port=${3:-5432}; workers=${4:-2}
  install
  bin=$(pg_bin)
  mkdir -p "$dir/artifacts"
  pg=$(pg_dir "$dir")
  if [ ! -f "$pg/data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$pg/data" -U mlflow -A trust -E UTF8 >"$dir/initdb.log"
  fi
  as_pg "$bin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -t 60 \
    -o "-p $pg_port -k $pg -c listen_addresses=127.0.0.1" start >/dev/null
  "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U mlflow -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" \
    | grep -q 1 || "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U mlflow mlflow
  if [ "$MLFLOW_APP" = basic-auth ]; then
    if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]; then
      echo "error: MLFLOW_APP=basic-auth needs MLFLOW_AUTH_ADMIN_PASSWORD (the admin user's password) set" >&2
      exit 2
    fi
    # The user store beside the data; the admin password stays in the environment, not in the file.
    sed -e "s|^database_uri = .*|database_uri = sqlite:///$dir/basic_auth.db|" \
      "$("$MLFLOW_PYTHON" -c 'import mlflow.server.auth as a, os; print(os.path.join(os.path.dirname(a.__file__), "basic_auth.ini"))')" \
      >"$dir/basic_auth.ini"
    export MLFLOW_AUTH_CONFIG_PATH="$dir/basic_auth.ini"
    # Its CSRF protection needs one secret shared by every worker: kept (owner-only) beside the data.
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
      if [ ! -s "$dir/flask_secret" ]; then
        (umask 077; "$MLFLOW_PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$dir/flask_secret")
      fi
      MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$dir/flask_secret")
      export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
  fi
  # gunicorn, not the default uvicorn: MLflow's API runs through a WSGI bridge there whose
  # split writes stall ~40 ms per request on a kept-alive loopback connection (Nagle + delayed ACK).
  setsid "$MLFLOW" server --backend-store-uri "postgresql+psycopg://mlflow@127.0.0.1:$pg_port/mlflow" \
    --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$port" --workers "$workers" \
    --gunicorn-opts "--timeout 300" ${MLFLOW_APP:+--app-name "$MLFLOW_APP"} \
    >"$dir/mlflow.log" 2>&1 &
  echo $! >"$dir/mlflow.pid"
  if ! wait_http "http://127.0.0.1:$port/health" 120; then
    echo "error: mlflow server did not come up; see $dir/mlflow.log" >&2
    tail -n 20 "$dir/mlflow.log" >&2
    stop "$dir"
    exit 1
  fi
  echo "http://127.0.0.1:$port"
}

stop() {
  local dir bin
  dir=$(cd "$1" && pwd); bin=$(pg_bin)
  if [ -f "$dir/mlflow.pid" ]; then
    kill -TERM -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$(cat "$dir/mlflow.pid")" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || true
    rm -f "$dir/mlflow.pid"
  fi
  if [ -f "$dir/pg.path" ] && [ -f "$(cat "$dir/pg.path")/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$(cat "$dir/pg.path")/data" -m fast -w stop >/dev/null || true
  fi
}

destroy() {
  stop "$1"
  if [ -f "$1/pg.path" ]; then rm -rf "$(cat "$1/pg.path")"; fi
  rm -rf "$1"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  destroy) shift; destroy "$@" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
