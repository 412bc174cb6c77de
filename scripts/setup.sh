#!/usr/bin/env bash
# Installs everything pg_tenancy needs on a fresh Debian/Ubuntu machine.
# Idempotent: each step is skipped when what it installs is already present.
set -euo pipefail

PG_MAJOR="${PG_MAJOR:-15}"
PGRX_VERSION="0.18.0"
PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config"

say()  { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "not root and sudo is missing: install sudo or run as root"
    SUDO="sudo"
fi

# --- 1. Debian packages ------------------------------------------------------
packages=(
    "postgresql-${PG_MAJOR}" "postgresql-server-dev-${PG_MAJOR}" "postgresql-contrib"
    libclang-dev clang sudo pkg-config libssl-dev make pgbouncer openssl valgrind
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null || fail "apt-get not found; install by hand: ${missing[*]}"
    say "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || fail "apt-get update failed (is the network up?)"
    # Debian's postgresql-common creates and starts a cluster on 5432 by default;
    # we run our own throwaway cluster, so tell it not to.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        $SUDO mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || fail "apt-get install failed for: ${missing[*]}"
else
    say "apt packages present"
fi
[ -x "$PG_CONFIG" ] || fail "$PG_CONFIG not found after install"

# --- 2. cargo / cargo-pgrx ---------------------------------------------------
command -v cargo >/dev/null || fail "cargo not found: install Rust (https://rustup.rs) first"
if cargo pgrx --version 2>/dev/null | grep -q " ${PGRX_VERSION}\$"; then
    say "cargo-pgrx ${PGRX_VERSION} present"
else
    say "installing cargo-pgrx ${PGRX_VERSION} (takes a few minutes)"
    cargo install cargo-pgrx --version "${PGRX_VERSION}" --locked \
        || fail "cargo install cargo-pgrx ${PGRX_VERSION} failed"
fi

# --- 3. cargo pgrx init --------------------------------------------------------
# pgrx builds against the system's headers, and `cargo pgrx test` installs its test build into
# the PostgreSQL named here: a private copy of the system's (scripts/pg-tree.sh), never the
# system's own directories. PGRX_HOME is per checkout (the Makefile sets it).
root="$(cd "$(dirname "$0")/.." && pwd)"
PGRX_HOME="${PGRX_HOME:-$("$root/scripts/state-dir.sh")/pgrx-home}"
export PGRX_HOME
tree_pg_config="$("$root/scripts/pg-tree.sh" pgrx)"
if [ -f "$PGRX_HOME/config.toml" ] && grep -q "pg${PG_MAJOR} *= *\"${tree_pg_config}\"" "$PGRX_HOME/config.toml"; then
    say "cargo pgrx already initialised for pg${PG_MAJOR} (PGRX_HOME=$PGRX_HOME)"
else
    say "cargo pgrx init --pg${PG_MAJOR} ${tree_pg_config}"
    mkdir -p "$PGRX_HOME"
    cargo pgrx init "--pg${PG_MAJOR}" "$tree_pg_config" || fail "cargo pgrx init failed"
fi
"$root/scripts/pg-tree.sh" test >/dev/null

say "done"
