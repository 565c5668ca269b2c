#!/usr/bin/env bash
# Builds build/ngx_http_spend_cap_module.so against Debian's nginx-dev
# (/usr/share/nginx/src, with the flags of Debian's nginx binary), or against
# any NGINX source tree given as NGINX_SRC=/path.
#
# SANITIZE=1 builds build/sanitize/ngx_http_spend_cap_module.so instead, with
# AddressSanitizer and UndefinedBehaviorSanitizer (gcc's). NGINX loads it only
# with their runtimes preloaded: LD_PRELOAD="$(gcc -print-file-name=libasan.so)
# $(gcc -print-file-name=libubsan.so)" (the integration tests do that when
# SPEND_CAP_SANITIZE=1).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build"
deps=(nginx nginx-dev libhiredis-dev libyaml-cpp-dev libjansson-dev libssl-dev
      zlib1g-dev libpcre2-dev g++ make cmake pkg-config libcurl4-openssl-dev
      libhowardhinnant-date-dev tzdata)

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
out="$build"
sanitize=()
if [ "${SANITIZE:-0}" = 1 ]; then
    out="$build/sanitize"
    sanitize=("--with-cc-opt=-fsanitize=address,undefined -fno-omit-frame-pointer -g"
              "--with-ld-opt=-fsanitize=address,undefined")
fi
objs="$out/nginx-objs"
mkdir -p "$out"

if [ -z "${NGINX_SRC:-}" ]; then
    # shellcheck disable=SC1091
    . "$src/conf_flags"   # NGX_CONF_FLAGS: the flags Debian's nginx was built with
    flags=("${NGX_CONF_FLAGS[@]}")
else
    flags=(--with-compat ${NGINX_CONFIGURE_FLAGS:-})
fi
flags+=("${sanitize[@]}")

# Reconfigure only when the flags, the addon script, the list of sources
# (any file added or removed under src/), a Lua script or a dashboard file
# (both embedded at configure time) changed.
stamp="$objs/.spend-cap-configured"
want="$(printf '%s\n' "$src" "${flags[@]}" | sha256sum)$(sha256sum < "$repo/config")$(ls "$repo"/src/ngx/* "$repo"/src/core/*/* | sha256sum)$(cat "$repo"/src/core/redis/scripts/*.lua "$repo"/src/core/redis/scripts/lib/*.lua | sha256sum)$(cd "$repo" && find ui -type f ! -name '.*' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    (cd "$src" && ./configure "${flags[@]}" --add-dynamic-module="$repo" --builddir="$objs") \
        > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
    printf '%s' "$want" > "$stamp"
fi

make -f "$objs/Makefile" -C "$src" -j"$(nproc)" modules > "$out/make.log" 2>&1 \
    || { grep -E "error|Error" "$out/make.log" | head -40; tail -5 "$out/make.log"; exit 1; }
# Replace, never overwrite: a running NGINX has the old file mapped.
cp "$objs/ngx_http_spend_cap_module.so" "$out/.ngx_http_spend_cap_module.so.new"
mv -f "$out/.ngx_http_spend_cap_module.so.new" "$out/ngx_http_spend_cap_module.so"
echo "build.sh: built $out/ngx_http_spend_cap_module.so"

# spend-cap-relay (src/relay), with the same compiler, against the same core.
if [ "${SANITIZE:-0}" != 1 ]; then
    cmake -S "$repo" -B "$build/relay" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPEND_CAP_TESTS=OFF \
        > "$build/relay-cmake.log" 2>&1 || { tail -20 "$build/relay-cmake.log"; exit 1; }
    cmake --build "$build/relay" --target spend-cap-relay -j"$(nproc)" > "$build/relay-make.log" 2>&1 \
        || { grep -E "error|Error" "$build/relay-make.log" | head -40; exit 1; }
    cp "$build/relay/spend-cap-relay" "$build/.spend-cap-relay.new"
    mv -f "$build/.spend-cap-relay.new" "$build/spend-cap-relay"
    echo "build.sh: built $build/spend-cap-relay"
fi
