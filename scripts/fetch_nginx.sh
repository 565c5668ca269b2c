#!/usr/bin/env bash
# scripts/fetch_nginx.sh [VERSION_OR_SUITE] DEST
#
# Fetches a pristine upstream NGINX source tree (the nginx_X.orig.tar.gz of Debian's
# nginx source package, not Debian's patches) from Debian's package mirror and unpacks
# it into DEST (which must not exist, or be empty): DEST/configure, DEST/src/...
#
#   VERSION_OR_SUITE   auto (default): Debian trixie's nginx (1.26.x), else bookworm's (1.22.1)
#                      trixie | bookworm: that release's nginx (its -security/-updates too)
#                      1.26 | 1.26.3 | 1.22.1: an upstream version (prefix), from any of them
#
# apt is used with a private configuration in a temporary directory (deb-src lists of
# deb.debian.org; the machine's own apt sources and state are not touched), so this
# works without root. apt checks the mirror's signed indexes; the .dsc is checked
# against the index and the tarball against both the index and the .dsc's
# Checksums-Sha256 (another Debian revision's .dsc of the same upstream version when
# the mirror lacks this one's; the index alone when it has none). A mirror may lack the newest (security) version's files: then the
# next version it lists is tried.
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian),
# DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
# Exit status: 0 fetched, 1 usage or local error, 2 nothing could be fetched.
set -euo pipefail

usage() { echo "usage: $0 [auto|trixie|bookworm|VERSION] DEST" >&2; exit 1; }
case $# in
    1) want=auto; dest=$1 ;;
    2) want=$1; dest=$2 ;;
    *) usage ;;
esac
[ -n "$dest" ] || usage
if [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
    echo "fetch_nginx.sh: $dest exists and is not empty" >&2
    exit 1
fi
for cmd in apt-get apt-cache curl sha256sum tar dpkg; do
    command -v "$cmd" >/dev/null || { echo "fetch_nginx.sh: needs $cmd" >&2; exit 1; }
done

mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
case $want in
    auto) releases=(trixie bookworm) ;;
    trixie|bookworm) releases=("$want") ;;
    [0-9]*.[0-9]*) releases=(trixie bookworm) ;;
    *) usage ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/fetch_nginx.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache" "$tmp/dl"
signed=""
[ -r "$keyring" ] && signed="[signed-by=$keyring] "
for r in "${releases[@]}"; do
    echo "deb-src ${signed}$mirror $r main"
    echo "deb-src ${signed}$mirror $r-updates main"
    echo "deb-src ${signed}$security $r-security main"
done > "$tmp/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=-"
          -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
          -o "APT::Sandbox::User=$(id -un)" -o "Debug::NoLocking=1")

failed=()   # what was tried and why it failed, for the final message
log() { echo "fetch_nginx.sh: $*" >&2; }
give_up() {
    echo "fetch_nginx.sh: could not fetch an NGINX source tree ($want) from $mirror / $security" >&2
    local f
    for f in "${failed[@]}"; do echo "  $f" >&2; done
    exit 2
}

log "reading the nginx source indexes of ${releases[*]} (deb-src, $mirror)"
# A failed index (one suite missing, say) need not stop us: the others may do.
apt-get -q "${apt_opts[@]}" update > "$tmp/update.log" 2>&1 || true
if grep -qE '^(E|W|Err):' "$tmp/update.log"; then
    failed+=("apt-get update: $(grep -E '^(E|W|Err):' "$tmp/update.log" | head -6 | tr '\n' ' ')")
fi

# Candidates: "release version" per line, releases in the order asked, newest version first.
madison=$(apt-cache "${apt_opts[@]}" madison nginx 2>/dev/null | grep ' Sources$' || true)
[ -n "$madison" ] || { failed+=("apt-cache madison nginx: no nginx source version listed"); give_up; }
candidates=()
for r in "${releases[@]}"; do
    versions=$(awk -F'|' -v r="$r" '{
        gsub(/ /, "", $2); split($3, w, " "); split(w[2], s, "/"); suite = s[1]
        if (suite == r || suite == r "-updates" || suite == r "-security") print $2 }' <<< "$madison" | sort -u)
    # newest first (dpkg's ordering)
    sorted=()
    while read -r v; do
        [ -n "$v" ] || continue
        i=0
        while [ $i -lt ${#sorted[@]} ] && dpkg --compare-versions "${sorted[$i]}" gt "$v"; do i=$((i + 1)); done
        sorted=("${sorted[@]:0:$i}" "$v" "${sorted[@]:$i}")
    done <<< "$versions"
    for v in "${sorted[@]}"; do
        upstream=${v%%-*}
        case $want in
            [0-9]*) [ "$upstream" = "$want" ] || [ "${upstream#"$want".}" != "$upstream" ] || continue ;;
        esac
        candidates+=("$r $v")
    done
done
[ ${#candidates[@]} -gt 0 ] || { failed+=("no nginx source version of ${releases[*]} matches '$want': $(tr -s ' ' <<< "$madison" | tr '\n' ';')"); give_up; }

# download URI FILE SIZE SHA256: fetches and checks it; non-zero (and a reason in $why) on failure
download() {
    local uri=$1 file=$2 size=$3 sum=$4 got
    rm -f "$file"
    if ! curl -fsS --retry 2 --connect-timeout 20 --speed-time 60 --speed-limit 1024 -o "$file.part" "$uri" 2> "$tmp/curl.err"; then
        why="$(tr '\n' ' ' < "$tmp/curl.err")"
        rm -f "$file.part"; return 1
    fi
    got=$(stat -c %s "$file.part")
    if [ -n "$size" ] && [ "$got" != "$size" ]; then why="got $got bytes, the index says $size"; rm -f "$file.part"; return 1; fi
    got=$(sha256sum "$file.part" | cut -d' ' -f1)
    if [ "$got" != "$sum" ]; then why="sha256 $got, the index says $sum"; rm -f "$file.part"; return 1; fi
    mv "$file.part" "$file"
}

for c in "${candidates[@]}"; do
    read -r release version <<< "$c"
    uris=$(apt-get -qq "${apt_opts[@]}" source --print-uris "nginx=$version" 2>"$tmp/print.err") \
        || { failed+=("nginx $version ($release): apt-get source --print-uris: $(tr '\n' ' ' < "$tmp/print.err")"); continue; }
    # 'URI' NAME SIZE SHA256:HEX
    dsc_line=$(grep -E "^'[^']+' nginx_[^ ]+\.dsc " <<< "$uris" | head -1 || true)
    orig_line=$(grep -E "^'[^']+' nginx_[^ ]+\.orig\.tar\.(gz|xz|bz2) " <<< "$uris" | head -1 || true)
    if [ -z "$dsc_line" ] || [ -z "$orig_line" ]; then
        failed+=("nginx $version ($release): apt lists no .dsc or no orig tarball"); continue
    fi
    read -r dsc_uri dsc_name dsc_size dsc_sum <<< "$dsc_line"
    read -r orig_uri orig_name orig_size orig_sum <<< "$orig_line"
    dsc_uri=${dsc_uri//\'/}; orig_uri=${orig_uri//\'/}
    if [ "${dsc_sum%%:*}" != SHA256 ] || [ "${orig_sum%%:*}" != SHA256 ]; then
        failed+=("nginx $version ($release): apt gives no SHA256 to check against ($dsc_sum, $orig_sum)"); continue
    fi
    dsc_sum=${dsc_sum#SHA256:}; orig_sum=${orig_sum#SHA256:}
    why=""
    # The .dsc's own checksum of the orig tarball must agree with the index's. A mirror
    # may have dropped a .dsc but kept the orig tarball: then the .dsc of another
    # Debian revision of the same upstream version (they share the tarball) will do,
    # and failing that the signed index's SHA256 is the check, and the output says so.
    checked=""
    dsc_missing=()
    first=1
    for other in "$version" "${candidates[@]#* }"; do
        [ "${other%%-*}" = "${version%%-*}" ] || continue
        if [ $first = 1 ]; then
            first=0
        else
            [ "$other" != "$version" ] || continue
            other_line=$(apt-get -qq "${apt_opts[@]}" source --print-uris "nginx=$other" 2>/dev/null \
                | grep -E "^'[^']+' nginx_[^ ]+\.dsc " | head -1) || continue
            read -r dsc_uri dsc_name dsc_size dsc_sum <<< "$other_line"
            dsc_uri=${dsc_uri//\'/}; dsc_sum=${dsc_sum#SHA256:}
        fi
        if ! download "$dsc_uri" "$tmp/dl/$dsc_name" "$dsc_size" "$dsc_sum"; then
            dsc_missing+=("$dsc_uri: $why"); continue
        fi
        dsc_says=$(awk -v f="$orig_name" '/^Checksums-Sha256:/ {on=1; next} /^[^ ]/ {on=0} on && $3 == f {print $1, $2}' "$tmp/dl/$dsc_name")
        if [ "$dsc_says" != "$orig_sum $orig_size" ]; then
            failed+=("nginx $version ($release): $dsc_name lists $orig_name as '${dsc_says:-nothing}', the index as '$orig_sum $orig_size'")
            checked=mismatch; break
        fi
        checked="the signed index and $dsc_name"; break
    done
    [ "$checked" != mismatch ] || continue
    if [ -z "$checked" ]; then
        log "nginx $version ($release): no .dsc of ${version%%-*} on the mirror (${dsc_missing[*]}); checking $orig_name against the signed index only"
        checked="the signed index (no .dsc of ${version%%-*} is on the mirror)"
    fi
    if ! download "$orig_uri" "$tmp/dl/$orig_name" "$orig_size" "$orig_sum"; then
        failed+=("nginx $version ($release): $orig_uri: $why"); continue
    fi

    # Unpack aside, then move into place: a half-unpacked tree must not pass for one.
    mkdir -p "$tmp/x"
    tar -xf "$tmp/dl/$orig_name" -C "$tmp/x"
    top=$(find "$tmp/x" -mindepth 2 -maxdepth 2 -path '*/src' -type d | head -1)
    top=${top%/src}
    if [ -z "$top" ] || [ ! -f "$top/src/core/nginx.h" ]; then
        failed+=("nginx $version ($release): $orig_name has no nginx-*/src/core/nginx.h"); rm -rf "$tmp/x"; continue
    fi
    tree_version=$(sed -n 's/^#define NGINX_VERSION *"\(.*\)"/\1/p' "$top/src/core/nginx.h")
    mkdir -p "$(dirname "$dest")"
    [ -d "$dest" ] && rmdir "$dest"
    mv "$top" "$dest"
    for f in "${failed[@]}"; do echo "fetch_nginx.sh: (tried first: $f)" >&2; done
    echo "fetch_nginx.sh: NGINX $tree_version from $orig_uri (Debian source nginx $version, $release; sha256 $orig_sum checked against $checked) -> $dest"
    exit 0
done
give_up
