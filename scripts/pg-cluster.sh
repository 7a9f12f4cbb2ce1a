#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for tests, never the system one:
#   scripts/pg-cluster.sh start        prints DIR:PORT (superuser `herald`, trust
#                                       auth, 127.0.0.1 only, fsync off)
#   scripts/pg-cluster.sh stop DIR:PORT stops it and removes DIR
#   scripts/pg-cluster.sh halt DIR:PORT  stops the server only (an outage)
#   scripts/pg-cluster.sh resume DIR:PORT starts it again on the same port
# Runs initdb and pg_ctl as the `postgres` user when run as root (initdb
# refuses root). Debian's `postgresql` is installed only if no initdb exists.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update >/dev/null && $sudo apt-get install -y postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}
case "${1:-}" in
  start)
    dir=$(mktemp -d -t herald-pg-XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb -D $dir/data -A trust -U herald --no-sync -E UTF8 --locale=C.UTF-8" >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg "$bin/pg_ctl -D $dir/data -l $dir/log -w start -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off'" >/dev/null ||
      { cat "$dir/log" >&2; exit 1; }
    echo "$dir:$port"
    ;;
  stop)
    dir=${2%:*}
    case "$(basename "$dir")" in herald-pg-*) ;; *) echo "not a cluster of this script: $dir" >&2; exit 2 ;; esac
    as_pg "$bin/pg_ctl -D $dir/data -m fast stop" >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
  halt|resume)
    dir=${2%:*}
    port=${2##*:}
    case "$(basename "$dir")" in herald-pg-*) ;; *) echo "not a cluster of this script: $dir" >&2; exit 2 ;; esac
    if [ "$1" = halt ]; then
      as_pg "$bin/pg_ctl -D $dir/data -m fast -w stop" >/dev/null
    else
      as_pg "$bin/pg_ctl -D $dir/data -l $dir/log -w start -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off'" >/dev/null ||
        { cat "$dir/log" >&2; exit 1; }
    fi
    ;;
  *) echo "usage: $0 start | stop DIR:PORT | halt DIR:PORT | resume DIR:PORT" >&2; exit 2 ;;
esac
