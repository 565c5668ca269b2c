#!/bin/sh
# Re-vendors the dashboard's chart library, uPlot, into ui/vendor/uplot/:
#
#   scripts/vendor_ui.sh [VERSION]      (default 1.6.32)
#
# For a maintainer updating it: it fetches the npm package with `npm pack`
# (the network), copies the minified script, the stylesheet and the licence,
# and writes VERSION.md with the sha256 of the tarball and of each file. The
# build never runs this: it embeds what is committed (scripts/embed_ui.sh).
set -eu

version=${1:-1.6.32}
repo=$(cd "$(dirname "$0")/.." && pwd)
dest="$repo/ui/vendor/uplot"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "vendor_ui.sh: needs npm" >&2; exit 1; }
(cd "$work" && npm pack --silent "uplot@$version" > pack.out)
tarball="$work/uplot-$version.tgz"
[ -f "$tarball" ] || { echo "vendor_ui.sh: npm pack gave no $tarball" >&2; exit 1; }
tar -xzf "$tarball" -C "$work"

files="dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE"
mkdir -p "$dest"
for f in $files; do
    [ -f "$work/package/$f" ] || { echo "vendor_ui.sh: the package has no $f" >&2; exit 1; }
    cp "$work/package/$f" "$dest/$(basename "$f")"
done

sha() { sha256sum "$1" | cut -d' ' -f1; }
{
    echo "# uPlot, vendored"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "| package | \`uplot\` (npm) |"
    echo "| version | $version |"
    echo "| from | \`npm pack uplot@$version\` (https://registry.npmjs.org/uplot/-/uplot-$version.tgz), https://github.com/leeoniya/uPlot |"
    echo "| tarball sha256 | \`$(sha "$tarball")\` |"
    echo "| date | $(date -u +%Y-%m-%d) |"
    echo "| licence | MIT (\`LICENSE\`) |"
    echo
    echo "| file | from the package | sha256 |"
    echo "|---|---|---|"
    for f in $files; do
        echo "| \`$(basename "$f")\` | \`$f\` | \`$(sha "$dest/$(basename "$f")")\` |"
    done
    echo
    echo "Copied unmodified by \`scripts/vendor_ui.sh $version\`; the dashboard serves them"
    echo "flat (\`.../ui/uPlot.iife.min.js\`). The build embeds them and never needs the network."
} > "$dest/VERSION.md"
echo "vendor_ui.sh: uPlot $version in $dest"
