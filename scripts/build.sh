#!/usr/bin/env bash
# Builds build/ngx_http_spend_cap_module.so against Debian's nginx-dev
# (/usr/share/nginx/src, with the flags of Debian's nginx binary), or against
# any NGINX source tree given as NGINX_SRC=/path.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build"
deps=(nginx nginx-dev libhiredis-dev libyaml-cpp-dev libjansson-dev libssl-dev
      zlib1g-dev libpcre2-dev g++ make)

missing=()
for pkg in "${deps[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "build.sh: missing packages: ${missing[*]}" >&2
        echo "build.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
        [ -n "${NGINX_SRC:-}" ] || exit 1
    fi
fi

src=${NGINX_SRC:-/usr/share/nginx/src}
objs="$build/nginx-objs"
mkdir -p "$build"

if [ -z "${NGINX_SRC:-}" ]; then
    # shellcheck disable=SC1091
    . "$src/conf_flags"   # NGX_CONF_FLAGS: the flags Debian's nginx was built with
    flags=("${NGX_CONF_FLAGS[@]}")
else
    flags=(--with-compat ${NGINX_CONFIGURE_FLAGS:-})
fi

# Reconfigure only when the flags, the addon script or the list of sources
# (any file added or removed under src/) changed.
stamp="$objs/.spend-cap-configured"
want="$(printf '%s\n' "$src" "${flags[@]}" | sha256sum)$(sha256sum < "$repo/config")$(ls "$repo"/src/*/*.cpp "$repo"/src/*/*.h | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    (cd "$src" && ./configure "${flags[@]}" --add-dynamic-module="$repo" --builddir="$objs") \
        > "$build/configure.log" 2>&1 || { tail -30 "$build/configure.log"; exit 1; }
    printf '%s' "$want" > "$stamp"
fi

make -f "$objs/Makefile" -C "$src" -j"$(nproc)" modules > "$build/make.log" 2>&1 \
    || { grep -E "error|Error" "$build/make.log" | head -40; tail -5 "$build/make.log"; exit 1; }
# Replace, never overwrite: a running NGINX has the old file mapped.
cp "$objs/ngx_http_spend_cap_module.so" "$build/.ngx_http_spend_cap_module.so.new"
mv -f "$build/.ngx_http_spend_cap_module.so.new" "$build/ngx_http_spend_cap_module.so"
echo "build.sh: built $build/ngx_http_spend_cap_module.so"
