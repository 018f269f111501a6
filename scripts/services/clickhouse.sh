#!/usr/bin/env bash
# ClickHouse for the ClickHouse sink's tests (tests/clickhouse.rs).
#
#   clickhouse.sh                 installs Debian's clickhouse-server (18.16) if missing
#   clickhouse.sh start DIR PORT  starts a server on 127.0.0.1:PORT (HTTP) with its
#                                 data, logs and pid in DIR, and waits until it answers
#   clickhouse.sh stop DIR        stops that server
#
# scripts/test.sh starts one for the suite and exports GATEWATCH_CLICKHOUSE_URL;
# the outage test starts (and stops) a private one of its own.
set -euo pipefail
case "${1:-install}" in
install)
    if [ -x /usr/sbin/clickhouse-server ]; then
        exit 0
    fi
    bash "$(dirname "$0")/apt.sh" clickhouse-server clickhouse-client
    # Where systemd exists the package may start a daemon on :8123/:9000; the tests start their own.
    systemctl stop clickhouse-server >/dev/null 2>&1 || true
    ;;
start)
    dir=$(realpath -m "$2") port=$3
    # Its native-protocol port too must be free (the tests speak HTTP only).
    tcp=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir"
    cat >"$dir/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/server.log</log><errorlog>$dir/error.log</errorlog></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$port</http_port>
    <tcp_port>$tcp</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
</yandex>
EOF
    cat >"$dir/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
        <profile>default</profile><quota>default</quota></default></users>
    <quotas><default></default></quotas>
</yandex>
EOF
    /usr/sbin/clickhouse-server --config-file="$dir/config.xml" >"$dir/stdout.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 100); do
        if curl -sf "http://127.0.0.1:$port/?query=SELECT%201" >/dev/null; then
            exit 0
        fi
        sleep 0.1
    done
    echo "clickhouse did not answer on :$port; see $dir/error.log" >&2
    exit 1
    ;;
stop)
    dir=$(realpath -m "$2")
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$dir/pid"
    fi
    ;;
*)
    echo "usage: $0 [install | start DIR PORT | stop DIR]" >&2
    exit 2
    ;;
esac
