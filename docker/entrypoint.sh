#!/bin/sh
# The image's entrypoint: TLS material arrives from Secrets Manager as environment variables (that is how ECS
# injects secrets), while `proximate worker`, `proximate autoscale` and `dask scheduler` take TLS as file paths.
# Write each variable that is set to its file, readable by this user only, drop it from the environment, then
# become the command.
set -eu
tls_dir="${PROXIMATE_TLS_DIR:-/tmp/proximate-tls}"
write_pem() {
    # $1: the variable's name, $2: the file it becomes
    value=$(printenv "$1" || true)
    if [ -n "$value" ]; then
        (umask 077 && mkdir -p "$tls_dir" && printf '%s\n' "$value" > "$tls_dir/$2.tmp" && mv "$tls_dir/$2.tmp" "$tls_dir/$2")
        unset "$1"
    fi
}
write_pem PROXIMATE_TLS_CA ca.pem
write_pem PROXIMATE_TLS_CERT cert.pem
write_pem PROXIMATE_TLS_KEY key.pem
exec "$@"
