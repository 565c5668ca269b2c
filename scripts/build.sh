#!/usr/bin/env bash
# Builds the module, ngx_http_spend_cap_module.so, and spend-cap-relay.
#
#   scripts/build.sh                 against Debian's nginx-dev (/usr/share/nginx/src),
#                                    with the flags of Debian's nginx binary
#   NGINX_SRC=/path scripts/build.sh against another NGINX source tree: a release
#                                    tarball's (./configure) or a git checkout's
#                                    (auto/configure); --with-compat plus
#                                    NGINX_CONFIGURE_FLAGS (words, split on spaces)
#   NGINX_SRC=/path NGINX_BINARY=/path/to/nginx scripts/build.sh
#                                    configured with exactly that binary's `nginx -V`
#                                    arguments (it need not have --with-compat); its
#                                    version must be the tree's
#   STATIC=1 (with NGINX_SRC)        an NGINX binary with the module built in
#                                    (--add-module) instead: OUT/nginx
#   OUT=/dir                         where the results go (default build/); the build
#                                    directories (nginx-tree/, nginx-objs/) go there too
#   SANITIZE=1                       build/sanitize/ngx_http_spend_cap_module.so with
#                                    AddressSanitizer and UndefinedBehaviorSanitizer (gcc's).
#                                    NGINX loads it only with their runtimes preloaded:
#                                    LD_PRELOAD="$(gcc -print-file-name=libasan.so)
#                                    $(gcc -print-file-name=libubsan.so)" (the integration
#                                    tests do that when SPEND_CAP_SANITIZE=1)
#   RELAY=0                          skips spend-cap-relay (built into build/relay/ and
#                                    build/spend-cap-relay; never with SANITIZE=1)
#   JOBS=N                           make -jN (default: nproc)
#
# The NGINX tree is never written to: NGINX's configure writes a Makefile into the
# tree it runs in, so it runs in a private copy, OUT/nginx-tree/ (refreshed when the
# tree's file list, sizes or mtimes change), with --builddir=OUT/nginx-objs.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build"
debian_src=/usr/share/nginx/src
jobs=${JOBS:-$(nproc)}
die() { echo "build.sh: $*" >&2; exit 1; }

if [ -n "${NGINX_SRC:-}" ]; then
    src=$(cd "$NGINX_SRC" 2>/dev/null && pwd) || die "NGINX_SRC=$NGINX_SRC is not a directory"
    debian=0
else
    src=$debian_src
    debian=1
    [ -z "${NGINX_BINARY:-}" ] || die "NGINX_BINARY needs NGINX_SRC (the source tree of that binary's version)"
fi
static=${STATIC:-0}
[ "$static" != 1 ] || [ "$debian" = 0 ] || die "STATIC=1 needs NGINX_SRC: Debian's $debian_src has headers only, no .c files"

# Debian packages: Debian's nginx and nginx-dev only when building against them.
deps=(libhiredis-dev libyaml-cpp-dev libjansson-dev libssl-dev zlib1g-dev libpcre2-dev
      g++ make cmake pkg-config libcurl4-openssl-dev libhowardhinnant-date-dev tzdata)
[ "$debian" = 0 ] || deps=(nginx nginx-dev "${deps[@]}")
missing=()
if command -v dpkg >/dev/null; then
    for pkg in "${deps[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "build.sh: missing packages: ${missing[*]}" >&2
        echo "build.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
        [ "$debian" = 0 ] || exit 1
    fi
fi

if [ -x "$src/configure" ] || [ -f "$src/configure" ]; then
    configure=./configure          # a release tarball
elif [ -f "$src/auto/configure" ]; then
    configure=auto/configure       # a git (or hg) checkout
else
    die "$src has neither configure nor auto/configure: not an NGINX source tree"
fi
[ -f "$src/src/core/nginx.h" ] || die "$src has no src/core/nginx.h: not an NGINX source tree"
tree_version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$src/src/core/nginx.h")
if [ "$static" = 1 ] && [ ! -f "$src/src/core/nginx.c" ]; then
    die "STATIC=1 needs a full NGINX source tree: $src has no src/core/nginx.c"
fi

if [ -n "${NGINX_BINARY:-}" ]; then
    [ -x "$NGINX_BINARY" ] || die "NGINX_BINARY=$NGINX_BINARY is not an executable"
    v=$("$NGINX_BINARY" -V 2>&1) || die "$NGINX_BINARY -V failed: $v"
    bin_version=$(sed -n 's|^nginx version: [^/]*/\([^ ]*\).*|\1|p' <<< "$v")
    if [ "$bin_version" != "$tree_version" ]; then
        die "$NGINX_BINARY is NGINX ${bin_version:-(version unknown)}, the tree $src is $tree_version: a module loads only into the version it was built for; give the tree of ${bin_version:-that version}"
    fi
fi

out=${OUT:-$build}
sanitize=()
if [ "${SANITIZE:-0}" = 1 ]; then
    [ -n "${OUT:-}" ] || out="$build/sanitize"
    sanitize=("--with-cc-opt=-fsanitize=address,undefined -fno-omit-frame-pointer -g"
              "--with-ld-opt=-fsanitize=address,undefined")
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$out/" in
    "$src/"*) die "OUT=$out is inside the NGINX tree $src, which is never written to" ;;
esac
objs="$out/nginx-objs"
tree="$out/nginx-tree"

# What is copied (and fingerprinted) of the tree: all but a VCS directory and what a
# configure and make of the user's own left there.
fingerprint() {
    (cd "$src" && find . \( -path ./.git -o -path ./.hg -o -path ./objs -o -path ./Makefile \) -prune \
        -o -printf '%P %y %s %T@\n' | LC_ALL=C sort | sha256sum | cut -d' ' -f1)
}
src_print="$src $(fingerprint)"
if [ ! -f "$tree/.spend-cap-source" ] || [ "$(cat "$tree/.spend-cap-source")" != "$src_print" ]; then
    rm -rf "$tree" "$tree.new"
    mkdir -p "$tree.new"
    tar -C "$src" --exclude=./.git --exclude=./.hg --exclude=./objs --exclude=./Makefile -cf - . \
        | tar -C "$tree.new" -xf -
    printf '%s' "$src_print" > "$tree.new/.spend-cap-source"
    mv "$tree.new" "$tree"
fi

if [ "$debian" = 1 ]; then
    # shellcheck disable=SC1091
    . "$tree/conf_flags"   # NGX_CONF_FLAGS: the flags Debian's nginx was built with
    flags=("${NGX_CONF_FLAGS[@]}")
elif [ -n "${NGINX_BINARY:-}" ]; then
    # one word a line: nginx -V prints them on one line, so no word has a newline
    words=$("$repo/scripts/nginx_configure_args.sh" <<< "$v") \
        || die "could not parse the configure arguments of $NGINX_BINARY: $(grep '^configure arguments:' <<< "$v")"
    bin_flags=()
    [ -z "$words" ] || mapfile -t bin_flags <<< "$words"
    flags=()
    for f in "${bin_flags[@]}"; do
        case "$f" in
            --add-module=*|--add-dynamic-module=*)
                path=${f#*=}
                case "$path" in /*) ;; *) path="$src/$path" ;; esac
                if [ ! -d "$path" ]; then
                    echo "build.sh: warning: $NGINX_BINARY was built with $f, which does not exist here: left out (its module is not rebuilt; $NGINX_BINARY keeps it)" >&2
                    continue
                fi
                f="${f%%=*}=$path" ;;
            --builddir=*) continue ;;   # ours
        esac
        flags+=("$f")
    done
else
    # shellcheck disable=SC2206
    flags=(--with-compat ${NGINX_CONFIGURE_FLAGS:-})
fi
flags+=("${sanitize[@]}")
if [ "$static" = 1 ]; then
    flags+=(--add-module="$repo")
else
    flags+=(--add-dynamic-module="$repo")
fi

# Reconfigure only when the tree, the flags, the addon script, the list of sources
# (any file added or removed under src/), a Lua script or a dashboard file (both
# embedded at configure time) changed.
stamp="$objs/.spend-cap-configured"
want="$(printf '%s\n' "$src_print" "$configure" "${flags[@]}" | sha256sum)$(sha256sum < "$repo/config")$(ls "$repo"/src/ngx/* "$repo"/src/core/*/* | sha256sum)$(cat "$repo"/src/core/redis/scripts/*.lua "$repo"/src/core/redis/scripts/lib/*.lua | sha256sum)$(cd "$repo" && find ui -type f ! -name '.*' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "build.sh: configuring NGINX $tree_version ($src, $configure) in $tree"
    (cd "$tree" && sh "$configure" "${flags[@]}" --builddir="$objs") \
        > "$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
    printf '%s' "$want" > "$stamp"
fi

if [ "$static" = 1 ]; then
    make -f "$objs/Makefile" -C "$tree" -j"$jobs" > "$out/make.log" 2>&1 \
        || { grep -E "error|Error" "$out/make.log" | head -40; tail -5 "$out/make.log"; exit 1; }
    cp "$objs/nginx" "$out/.nginx.new"
    mv -f "$out/.nginx.new" "$out/nginx"
    echo "build.sh: built $out/nginx (NGINX $tree_version with the module built in)"
else
    make -f "$objs/Makefile" -C "$tree" -j"$jobs" modules > "$out/make.log" 2>&1 \
        || { grep -E "error|Error" "$out/make.log" | head -40; tail -5 "$out/make.log"; exit 1; }
    # Replace, never overwrite: a running NGINX has the old file mapped.
    cp "$objs/ngx_http_spend_cap_module.so" "$out/.ngx_http_spend_cap_module.so.new"
    mv -f "$out/.ngx_http_spend_cap_module.so.new" "$out/ngx_http_spend_cap_module.so"
    echo "build.sh: built $out/ngx_http_spend_cap_module.so (NGINX $tree_version)"
fi

# spend-cap-relay (src/relay), with the same compiler, against the same core.
if [ "${SANITIZE:-0}" != 1 ] && [ "${RELAY:-1}" != 0 ]; then
    cmake -S "$repo" -B "$build/relay" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPEND_CAP_TESTS=OFF \
        > "$build/relay-cmake.log" 2>&1 || { tail -20 "$build/relay-cmake.log"; exit 1; }
    cmake --build "$build/relay" --target spend-cap-relay -j"$jobs" > "$build/relay-make.log" 2>&1 \
        || { grep -E "error|Error" "$build/relay-make.log" | head -40; exit 1; }
    cp "$build/relay/spend-cap-relay" "$build/.spend-cap-relay.new"
    mv -f "$build/.spend-cap-relay.new" "$build/spend-cap-relay"
    echo "build.sh: built $build/spend-cap-relay"
fi
