#!/bin/sh
# PostgreSQL on the persistent disk (`store`), as the `postgres` user when started as
# root. The first start creates the cluster, trusting connections from the
# deployment's network, and the databases.
set -e
data="$PWD/store/postgres"
bin="<%= p("postgres.bin_dir") %>"
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
mkdir -p "$data"
if [ "$(id -u)" = 0 ]; then chown postgres "$data"; fi
chmod 700 "$data"
if [ ! -f "$data/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust --no-locale >/dev/null
    echo "host all all 0.0.0.0/0 trust" >> "$data/pg_hba.conf"
    for db in <%= p("postgres.databases") %>; do
        echo "CREATE DATABASE $db;" | as_postgres "$bin/postgres" --single -D "$data" postgres >/dev/null
    done
fi
if [ "$(id -u)" = 0 ]; then
    exec runuser -u postgres -- "$bin/postgres" -D "$data" -h <%= spec.address %> -p <%= p("postgres.port") %> -c unix_socket_directories=
fi
exec "$bin/postgres" -D "$data" -h <%= spec.address %> -p <%= p("postgres.port") %> -c unix_socket_directories=
