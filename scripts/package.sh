#!/usr/bin/env bash
# Builds the Debian packages, the way Debian builds its libnginx-mod-* packages
# (debhelper with dh_nginx, against nginx-dev's /usr/share/nginx/src):
#   build/libnginx-mod-http-spend-cap_VERSION_ARCH.deb  the module, enabled in modules-enabled
#   build/spend-cap-relay_VERSION_ARCH.deb              the relay, its systemd unit, an example file
# (+ their -dbgsym packages, the .buildinfo and .changes), then runs lintian on them.
#
# It builds in a copy of the working tree (tracked and untracked files, not what
# .gitignore names, so never build/), in build/package/src: the checkout itself is
# never written to but build/.
#
# The version comes from git: a tag vX.Y.Z on HEAD gives X.Y.Z; a tag further back
# gives X.Y.Z+gitYYYYMMDD.HASH; no tag gives 0.1.0+gitYYYYMMDD.HASH (the date is
# HEAD's commit date, UTC). PACKAGE_VERSION=... overrides it.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build"
work="$build/package"
started=$(date +%s)

deps=(dpkg-dev debhelper lintian nginx-dev nginx cmake pkg-config g++ make
      libhiredis-dev libyaml-cpp-dev libjansson-dev libssl-dev zlib1g-dev libpcre2-dev
      libhowardhinnant-date-dev libcurl4-openssl-dev tzdata)
missing=()
for pkg in "${deps[@]}"; do
    dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "package.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "package.sh: missing packages: ${missing[*]}" >&2
        echo "package.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# The version.
if [ -n "${PACKAGE_VERSION:-}" ]; then
    version=$PACKAGE_VERSION
elif git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    hash=$(git -C "$repo" rev-parse --short=7 HEAD)
    day=$(TZ=UTC git -C "$repo" log -1 --date=format-local:%Y%m%d --format=%cd HEAD)
    if tag=$(git -C "$repo" describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null); then
        version=${tag#v}
    elif tag=$(git -C "$repo" describe --tags --abbrev=0 --match 'v[0-9]*' HEAD 2>/dev/null); then
        version="${tag#v}+git$day.$hash"
    else
        version="0.1.0+git$day.$hash"
    fi
else
    version="0.1.0"
fi
case $version in
    [0-9]*) ;;
    *) echo "package.sh: version '$version' does not start with a digit" >&2; exit 1 ;;
esac
echo "package.sh: version $version"

# A clean copy of the tree.
rm -rf "$work"
mkdir -p "$work/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - -cf -) | tar -xf - -C "$work/src"
else
    (cd "$repo" && tar --exclude=./build --exclude=./.git --exclude=./t/sdk/node_modules -cf - .) \
        | tar -xf - -C "$work/src"
fi

# debian/changelog for this version (the committed one holds the 0.1.0 entry).
maintainer=$(sed -n 's/^Maintainer: //p' "$work/src/debian/control")
cat > "$work/src/debian/changelog" <<CHANGELOG
spend-cap ($version) unstable; urgency=medium

  * Built by scripts/package.sh from $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo "a tree without git").

 -- $maintainer  $(LC_ALL=C date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct HEAD 2>/dev/null || date +%s)}")
CHANGELOG

# Build (as the invoking user: Rules-Requires-Root: no).
rm -f "$build"/libnginx-mod-http-spend-cap_* "$build"/libnginx-mod-http-spend-cap-dbgsym_* \
      "$build"/spend-cap-relay_* "$build"/spend-cap-relay-dbgsym_* "$build"/spend-cap_*
log="$work/build.log"
if ! (cd "$work/src" && dpkg-buildpackage -us -uc -b -j"$(nproc)") > "$log" 2>&1; then
    grep -E "error|Error|dpkg-buildpackage:|dh_[a-z_]+: " "$log" | head -40
    tail -20 "$log"
    echo "package.sh: dpkg-buildpackage failed (log: $log)" >&2
    exit 1
fi
for f in "$work"/*.deb "$work"/*.ddeb "$work"/*.buildinfo "$work"/*.changes; do
    [ -e "$f" ] && mv -f "$f" "$build/"
done
ls -l "$build"/*_"$version"_*.deb | awk '{print "package.sh: built " $NF " (" $5 " bytes)"}'

# lintian: errors fail, warnings and the rest are printed.
changes=$(ls "$build"/spend-cap_"$version"_*.changes)
echo "package.sh: lintian $changes"
lintian_log="$work/lintian.log"
set +e
lintian --display-info --fail-on error "$changes" 2>&1 \
    | grep -vx "running with root privileges is not recommended!" > "$lintian_log"
lintian_rc=${PIPESTATUS[0]}
set -e
if [ -s "$lintian_log" ]; then cat "$lintian_log"; else echo "package.sh: lintian: clean"; fi
echo "package.sh: done in $(( $(date +%s) - started )) s"
exit "$lintian_rc"
