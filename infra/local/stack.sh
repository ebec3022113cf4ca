#!/usr/bin/env bash
# mmaux's local stack without Docker: PostgreSQL, an MLflow tracking server on Postgres with
# proxied artifacts, a Prefect server on Postgres and N Prefect process workers on one pool.
# Every server binds to 127.0.0.1 (MMAUX_BIND to change it); all state lives in one folder.
#
#   infra/local/stack.sh up        # install PostgreSQL if missing, start everything, wait
#   infra/local/stack.sh env       # the exports that point dvc, the CLI and flows at it
#   infra/local/stack.sh status    # what runs, with pids and URLs
#   infra/local/stack.sh down      # stop everything (state is kept; `up` resumes it)
#
# Settings (environment, or MMAUX_INFRA_HOME/stack.env written on the first `up`):
#   MMAUX_INFRA_HOME   state folder (default: .infra in the repository)
#   MMAUX_BIND         address the servers listen on (default 127.0.0.1)
#   MMAUX_PG_PORT      PostgreSQL port (default 5433)
#   MMAUX_MLFLOW_PORT  MLflow port (default 5000)
#   MMAUX_PREFECT_PORT Prefect port (default 4200)
#   MMAUX_WORKERS      Prefect process workers (default 2)
#   MMAUX_POOL         Prefect work pool (default mmaux-process)
#   MMAUX_ARTIFACTS    MLflow artifact destination: a folder or s3://bucket/prefix
#                      (default: MMAUX_INFRA_HOME/artifacts)
#   MMAUX_PYTHON_BIN   folder with mlflow and prefect (default: the repository's .venv/bin)
#   MMAUX_MLFLOW_AUTH  1: MLflow's basic-auth app (user admin, password in secrets.env)
# The database password is generated on the first `up` into MMAUX_INFRA_HOME/secrets.env
# (mode 600, never in git); set MMAUX_PG_PASSWORD to choose it instead.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HOME_DIR="$(realpath -m "${MMAUX_INFRA_HOME:-$REPO/.infra}")"

# The first `up` records the settings, so later calls (and `down`) find the same stack.
if [[ -f "$HOME_DIR/stack.env" ]]; then
  # shellcheck disable=SC1091
  source "$HOME_DIR/stack.env"
fi
BIND="${MMAUX_BIND:-${STACK_BIND:-127.0.0.1}}"
PG_PORT="${MMAUX_PG_PORT:-${STACK_PG_PORT:-5433}}"
MLFLOW_PORT="${MMAUX_MLFLOW_PORT:-${STACK_MLFLOW_PORT:-5000}}"
PREFECT_PORT="${MMAUX_PREFECT_PORT:-${STACK_PREFECT_PORT:-4200}}"
WORKERS="${MMAUX_WORKERS:-${STACK_WORKERS:-2}}"
POOL="${MMAUX_POOL:-${STACK_POOL:-mmaux-process}}"
ARTIFACTS="${MMAUX_ARTIFACTS:-${STACK_ARTIFACTS:-$HOME_DIR/artifacts}}"
BIN="${MMAUX_PYTHON_BIN:-${STACK_PYTHON_BIN:-$REPO/.venv/bin}}"
AUTH="${MMAUX_MLFLOW_AUTH:-${STACK_MLFLOW_AUTH:-0}}"

PG_DATA="$HOME_DIR/postgres/data"
PG_SOCK="$HOME_DIR/postgres/run"
LOGS="$HOME_DIR/logs"
PIDS="$HOME_DIR/pids"
PG_USER=mmaux
DATABASES=(mlflow mlflow_auth prefect optuna)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }

pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x "$dir/postgres" ]] && { echo "$dir"; return 0; }
  done
  return 1
}

install_postgres() {
  pg_bin >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "PostgreSQL's server is not installed; as root: apt-get install postgresql"
  log "installing PostgreSQL (Debian's package)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  pg_bin >/dev/null || die "apt-get installed no PostgreSQL server"
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user.
as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

random_hex() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

secret() {
  if [[ ! -f "$HOME_DIR/secrets.env" ]]; then
    local pw="${MMAUX_PG_PASSWORD:-$(random_hex)}"
    (umask 077 && printf 'PG_PASSWORD=%s\n' "$pw" >"$HOME_DIR/secrets.env")
  fi
  # shellcheck disable=SC1091
  source "$HOME_DIR/secrets.env"
  local key
  for key in MLFLOW_ADMIN_PASSWORD MLFLOW_FLASK_SECRET; do  # missing in older state folders
    if [[ -z "${!key:-}" ]]; then
      printf -v "$key" '%s' "$(random_hex)"
      printf '%s=%s\n' "$key" "${!key}" >>"$HOME_DIR/secrets.env"
    fi
  done
}

url() {  # url DRIVER DB
  local driver="$1" db="$2"
  echo "${driver}://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${db}"
}

alive() { [[ -f "$PIDS/$1.pid" ]] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name="$1" limit="$2"
  shift 2
  local t=0
  until "$@" >/dev/null 2>&1; do
    sleep 1
    t=$((t + 1))
    if ((t >= limit)); then
      tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
      die "$name did not come up in ${limit}s (log: $LOGS/$name.log)"
    fi
    if [[ -f "$PIDS/$name.pid" ]] && ! alive "$name"; then
      tail -n 30 "$LOGS/$name.log" >&2 2>/dev/null || true
      die "$name exited (log: $LOGS/$name.log)"
    fi
  done
}

start_bg() {  # start_bg NAME COMMAND... (env set by the caller)
  local name="$1"
  shift
  if alive "$name"; then
    log "$name already runs (pid $(cat "$PIDS/$name.pid"))"
    return 0
  fi
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

postgres_up() {
  local bin
  bin="$(pg_bin)"
  mkdir -p "$PG_DATA" "$PG_SOCK"
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres:postgres "$HOME_DIR/postgres"
    runuser -u postgres -- test -x "$HOME_DIR/postgres" ||
      die "the postgres user cannot reach $HOME_DIR (a parent folder is closed to it): choose MMAUX_INFRA_HOME elsewhere"
  fi
  chmod 700 "$PG_DATA"
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "initialising a PostgreSQL cluster in $PG_DATA"
    local pwfile="$HOME_DIR/postgres/pw"
    (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$pwfile")
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$pwfile"
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$PG_USER" --pwfile="$pwfile" \
      --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 >"$LOGS/initdb.log"
    rm -f "$pwfile"
  fi
  if as_pg "$bin/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    log "postgres already runs"
  else
    log "starting postgres on $BIND:$PG_PORT"
    touch "$LOGS/postgres.log"
    [[ $(id -u) -eq 0 ]] && chown postgres:postgres "$LOGS/postgres.log"
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$LOGS/postgres.log" -w -t 60 start \
      -o "-c listen_addresses=$BIND -p $PG_PORT -k $PG_SOCK" >/dev/null
  fi
  local db
  for db in "${DATABASES[@]}"; do
    if ! PGPASSWORD="$PG_PASSWORD" "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
      -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1; then
      PGPASSWORD="$PG_PASSWORD" "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" "$db"
      log "created database $db"
    fi
  done
}

mlflow_up() {
  local dest="$ARTIFACTS"
  [[ "$dest" == *://* ]] || { mkdir -p "$dest"; dest="file://$(realpath "$dest")"; }
  local app=()
  if [[ "$AUTH" == 1 ]]; then
    # MLflow's basic-auth app: users and permissions in Postgres, admin's password from
    # secrets.env (read by MLflow on its first start only).
    (umask 077 && cat >"$HOME_DIR/mlflow-auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $(url postgresql+psycopg2 mlflow_auth)
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    )
    export MLFLOW_AUTH_CONFIG_PATH="$HOME_DIR/mlflow-auth.ini"
    export MLFLOW_AUTH_ADMIN_PASSWORD="$MLFLOW_ADMIN_PASSWORD"
    export MLFLOW_FLASK_SERVER_SECRET_KEY="$MLFLOW_FLASK_SECRET"  # CSRF tokens of the auth UI
    app=(--app-name basic-auth)
  fi
  log "starting the MLflow server on http://$BIND:$MLFLOW_PORT (artifacts: $dest, auth: $AUTH)"
  start_bg mlflow "$BIN/mlflow" server "${app[@]}" \
    --backend-store-uri "$(url postgresql+psycopg2 mlflow)" \
    --serve-artifacts --artifacts-destination "$dest" \
    --host "$BIND" --port "$MLFLOW_PORT" --workers 1 \
    --allowed-hosts "127.0.0.1:$MLFLOW_PORT,localhost:$MLFLOW_PORT,$BIND:$MLFLOW_PORT"
  wait_for mlflow 180 curl -fsS "http://127.0.0.1:$MLFLOW_PORT/health"
  unset MLFLOW_AUTH_ADMIN_PASSWORD
}

prefect_env() {
  export PREFECT_HOME="$HOME_DIR/prefect"
  export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
}

prefect_up() {
  prefect_env
  log "starting the Prefect server on http://$BIND:$PREFECT_PORT"
  PREFECT_API_DATABASE_CONNECTION_URL="$(url postgresql+asyncpg prefect)" \
    PREFECT_UI_API_URL="http://$BIND:$PREFECT_PORT/api" \
    start_bg prefect "$BIN/prefect" server start --host "$BIND" --port "$PREFECT_PORT" \
    --analytics-off
  wait_for prefect 240 curl -fsS "http://127.0.0.1:$PREFECT_PORT/api/health"
  if ! "$BIN/prefect" work-pool inspect "$POOL" >/dev/null 2>&1; then
    "$BIN/prefect" work-pool create "$POOL" --type process >/dev/null
    log "created work pool $POOL"
  fi
  # Flow runs the workers start track to this stack's MLflow server.
  export MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT"
  if [[ "$AUTH" == 1 ]]; then
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD="$MLFLOW_ADMIN_PASSWORD"
  fi
  local i
  for ((i = 1; i <= WORKERS; i++)); do
    (cd "$REPO" && start_bg "worker-$i" "$BIN/prefect" worker start --pool "$POOL" \
      --name "$(hostname)-$i" --type process)
  done
}

cmd_up() {
  mkdir -p "$HOME_DIR" "$LOGS" "$PIDS"
  [[ -x "$BIN/mlflow" && -x "$BIN/prefect" ]] || die "no mlflow/prefect in $BIN: make install first"
  cat >"$HOME_DIR/stack.env" <<EOF
STACK_BIND=$BIND
STACK_PG_PORT=$PG_PORT
STACK_MLFLOW_PORT=$MLFLOW_PORT
STACK_PREFECT_PORT=$PREFECT_PORT
STACK_WORKERS=$WORKERS
STACK_POOL=$POOL
STACK_ARTIFACTS=$ARTIFACTS
STACK_PYTHON_BIN=$BIN
STACK_MLFLOW_AUTH=$AUTH
EOF
  install_postgres
  secret
  postgres_up
  mlflow_up
  prefect_up
  cmd_status
}

stop_pid() {  # stop_pid NAME: SIGTERM the process group, SIGKILL after 20 s
  local name="$1" pid
  [[ -f "$PIDS/$name.pid" ]] || return 0
  pid="$(cat "$PIDS/$name.pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local t=0
    while kill -0 "$pid" 2>/dev/null && ((t < 20)); do sleep 1; t=$((t + 1)); done
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped $name"
  fi
  rm -f "$PIDS/$name.pid"
}

cmd_down() {
  local f
  for f in "$PIDS"/worker-*.pid; do
    [[ -e "$f" ]] && stop_pid "$(basename "$f" .pid)"
  done
  stop_pid prefect
  stop_pid mlflow
  if [[ -f "$PG_DATA/PG_VERSION" ]] && pg_bin >/dev/null; then
    if as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
      as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
      log "stopped postgres"
    fi
  fi
}

cmd_env() {
  secret
  cat <<EOF
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export MMAUX_POSTGRES_URL=postgresql://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}
EOF
  if [[ "$AUTH" == 1 ]]; then
    echo "export MLFLOW_TRACKING_USERNAME=admin"
    echo "export MLFLOW_TRACKING_PASSWORD=$MLFLOW_ADMIN_PASSWORD"
  fi
}

cmd_status() {
  local name up=0
  for name in mlflow prefect $(cd "$PIDS" 2>/dev/null && ls worker-*.pid 2>/dev/null | sed 's/\.pid$//'); do
    if alive "$name"; then
      echo "$name: running (pid $(cat "$PIDS/$name.pid"))"
    else
      echo "$name: stopped"
      up=1
    fi
  done
  if [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    echo "postgres: running on $BIND:$PG_PORT"
  else
    echo "postgres: stopped"
    up=1
  fi
  echo "MLflow UI: http://127.0.0.1:$MLFLOW_PORT  Prefect UI: http://127.0.0.1:$PREFECT_PORT"
  echo "state: $HOME_DIR"
  return $up
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
