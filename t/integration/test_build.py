"""The addon script builds into any NGINX source tree, statically too.

The other tests load the dynamic module built against Debian's nginx-dev (headers
only: /usr/share/nginx/src has `configure` and the headers but none of the .c files,
so it cannot be used here). This one takes the upstream NGINX source Debian ships
(the nginx_*.orig.tar.gz of the nginx source package), builds NGINX with
`--add-module`, and checks the built-in module enforces caps. The build is kept in
build/static/; an extracted tree in build/static/src/ is reused.

The tarball is located through a private apt configuration (deb-src lists of the
machine's own Debian mirror, in build/static/apt, leaving the machine's apt state
alone): `apt-get source --print-uris` names its URI, size and hash, and only that
file is downloaded and checked. apt-get source itself is not used: it also wants
the .dsc and .debian.tar.xz, which a mirror may lack for the newest (security)
version while still having the orig tarball; when the newest version's tarball
cannot be fetched either, the other versions `apt-cache showsrc` knows are tried
(Debian revisions of one upstream release share its orig tarball).

Without apt sources this is a skip, but a failure under CI (env CI set): the test
must not quietly stop running there.
"""

import functools
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from support import CHAINS, REPO, SECRETS, all_counter_keys, chat_body, post, read_counters, wait_until

WORK = REPO / "build" / "static"
DEB822_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
ONE_LINE_SOURCES = Path("/etc/apt/sources.list")
DOWNLOAD_TIMEOUT = 60  # seconds without data before a download is given up
ORIG_TARBALL = re.compile(r"^nginx_[^/]+\.orig\.tar\.(gz|xz|bz2)$")
# apt-get --print-uris: 'URI' filename size hash (size and hash optional, hash
# "SHA256:<hex>", "MD5Sum:<hex>", ... or bare hex from older apt)
URI_LINE = re.compile(r"^'(?P<uri>[^']+)'\s+(?P<name>\S+)(?:\s+(?P<size>\d+))?(?:\s+(?P<hash>\S+))?\s*$")
HASH_NAMES = {"sha512": "sha512", "sha256": "sha256", "sha1": "sha1", "md5sum": "md5", "md5": "md5"}
BARE_HASH_LENGTHS = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


def _run(cmd, cwd, log):
    with open(log, "a") as out:
        out.write("$ %s\n" % " ".join(map(str, cmd)))
        out.flush()
        subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)


def _capture(cmd, cwd, log):
    """Runs cmd (no check), logging it and its output; returns the CompletedProcess."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    with open(log, "a") as out:
        out.write("$ %s\n%s%s[exit %d]\n" % (shlex.join(map(str, cmd)), proc.stdout, proc.stderr, proc.returncode))
    return proc


def _no_source(reason):
    if os.environ.get("CI"):
        pytest.fail("%s (CI is set: this must not be a skip)" % reason)
    pytest.skip(reason)


def _private_apt(apt):
    """apt -o options for deb-src lists of the machine's Debian mirror, kept in apt/."""
    if DEB822_SOURCES.exists():
        text = re.sub(r"(?mi)^Types:.*$", "Types: deb-src", DEB822_SOURCES.read_text())
        name = "debian-src.sources"
    elif ONE_LINE_SOURCES.exists() and re.search(r"(?m)^\s*deb\s", ONE_LINE_SOURCES.read_text()):
        text = "".join(re.sub(r"^\s*deb\s+", "deb-src ", line) + "\n"
                       for line in ONE_LINE_SOURCES.read_text().splitlines() if re.match(r"\s*deb\s", line))
        name = "debian-src.list"
    else:
        _no_source("no Debian apt sources (%s or %s) on this machine to fetch the NGINX source from"
                   % (DEB822_SOURCES, ONE_LINE_SOURCES))
    parts = apt / "sources.list.d"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    (parts / name).write_text(text)
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    return ["-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=%s" % parts,
            "-o", "Dir::State::Lists=%s" % (apt / "lists"), "-o", "Dir::Cache=%s" % (apt / "cache"),
            "-o", "APT::Sandbox::User=root"]


def _parse_hash(field):
    """(hashlib name, hex digest) of an apt hash field, or None when it cannot be checked."""
    if not field:
        return None
    algo, colon, digest = field.rpartition(":")
    name = HASH_NAMES.get(algo.lower().replace("-", "")) if colon else BARE_HASH_LENGTHS.get(len(digest))
    if name is None or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        return None
    return name, digest.lower()


def _orig_tarballs(stdout):
    """(uri, filename, size or None, (algo, digest) or None) of the orig tarballs apt printed."""
    found = []
    for line in stdout.splitlines():
        m = URI_LINE.match(line.strip())
        if m and ORIG_TARBALL.match(m["name"]):
            found.append((m["uri"], m["name"], int(m["size"]) if m["size"] else None, _parse_hash(m["hash"])))
    return found


def _check(path, size, digest):
    """None when path has apt's size and hash, else what differs."""
    got = path.stat().st_size
    if size is not None and got != size:
        return "got %d bytes, apt expects %d" % (got, size)
    if digest:
        h = hashlib.new(digest[0])
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest[1]:
            return "%s %s, apt expects %s" % (digest[0], h.hexdigest(), digest[1])
    return None


def _download(uri, dest, size, digest):
    """Fetches uri to dest, checked against apt's size and hash; returns None or why it failed."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(uri, timeout=DOWNLOAD_TIMEOUT) as resp, open(part, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 16)
        wrong = _check(part, size, digest)
        if wrong:
            return wrong
        part.replace(dest)
        return None
    except urllib.error.HTTPError as e:
        return "HTTP %d %s" % (e.code, e.reason)
    except urllib.error.URLError as e:
        return "%s" % (e.reason,)
    except (OSError, ValueError) as e:  # timeouts, resets, a URI urllib cannot open
        return "%s: %s" % (type(e).__name__, e)
    finally:
        part.unlink(missing_ok=True)


def _other_versions(opts, cwd, log):
    """The nginx source versions apt knows, newest first."""
    proc = _capture(["apt-cache"] + opts + ["showsrc", "nginx"], cwd, log)
    versions = []
    for stanza in re.split(r"\n\s*\n", proc.stdout):
        if re.search(r"(?m)^Package:\s*nginx\s*$", stanza):
            versions += [v for v in re.findall(r"(?m)^Version:\s*(\S+)", stanza) if v not in versions]

    def compare(a, b):
        if subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0:
            return -1
        return 1 if subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0 else 0
    return sorted(versions, key=functools.cmp_to_key(compare))


def _fetch_tarball(opts, apt, dest_dir, log):
    """Downloads an nginx_*.orig.tar.gz apt knows into dest_dir: (its path or None, what
    was tried). Tries the newest version first, then every other version apt knows,
    each distinct URI once."""
    tried = []  # lines for the failure message
    seen = set()
    specs = ["nginx"]
    i = 0
    while i < len(specs):
        spec = specs[i]
        i += 1
        proc = _capture(["apt-get", "-qq"] + opts + ["source", "--print-uris", spec], apt, log)
        tarballs = _orig_tarballs(proc.stdout)
        if proc.returncode != 0 or not tarballs:
            tried.append("%s: `apt-get source --print-uris` exit %d, %s: %s" % (
                spec, proc.returncode, "%d orig tarball(s)" % len(tarballs),
                (proc.stderr.strip() or proc.stdout.strip() or "no output")[-500:]))
        for uri, name, size, digest in tarballs:
            if uri in seen:
                tried.append("%s: %s -> same URI as above, not tried again" % (spec, uri))
                continue
            seen.add(uri)
            dest = dest_dir / name
            if digest and dest.exists() and _check(dest, size, digest) is None:
                return dest, tried  # downloaded before, intact
            why = _download(uri, dest, size, digest)
            with open(log, "a") as out:
                out.write("GET %s -> %s\n" % (uri, why or "ok"))
            if why is None:
                return dest, tried
            tried.append("%s: %s (%s bytes, %s) -> %s" % (
                spec, uri, size if size is not None else "size unknown",
                "%s %s" % digest if digest else "no hash to check", why))
        if spec == "nginx":
            specs += ["nginx=%s" % v for v in _other_versions(opts, apt, log)]
    return None, tried


def _fetch_source(log):
    """The upstream NGINX source tree Debian ships, from the machine's own Debian mirror."""
    existing = sorted(WORK.glob("src/nginx-*/configure"))
    if existing:
        return existing[0].parent
    apt = WORK / "apt"
    opts = _private_apt(apt)
    update = _capture(["apt-get", "-qq"] + opts + ["update"], apt, log)
    # A failed index (say one suite's Sources 404) need not stop us: the others may do.
    src = WORK / "src"
    src.mkdir(exist_ok=True)
    tarball, tried = _fetch_tarball(opts, apt, src, log)
    if tarball is None:
        msg = ["could not fetch an NGINX upstream tarball (nginx_*.orig.tar.gz) from the Debian mirror; tried:"]
        msg += ["  " + line for line in tried] or ["  nothing: apt listed no nginx source version"]
        if update.returncode != 0:
            msg.append("`apt-get update` (deb-src lists in %s) exited %d: %s"
                       % (apt, update.returncode, (update.stderr.strip() or update.stdout.strip())[-1000:]))
        msg.append("log: %s" % log)
        pytest.fail("\n".join(msg))
    # Extract aside, then move into place: a half-extracted tree must not pass for the cache.
    tmp = src / ".extract"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _run(["tar", "xf", str(tarball)], tmp, log)
    trees = sorted(tmp.glob("nginx-*/configure"))
    if not trees:
        pytest.fail("%s has no nginx-*/configure; its top level: %s" % (tarball, sorted(p.name for p in tmp.iterdir())))
    tree = src / trees[0].parent.name
    shutil.rmtree(tree, ignore_errors=True)
    trees[0].parent.rename(tree)
    shutil.rmtree(tmp)
    return tree


@pytest.fixture(scope="module")
def static_nginx():
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("fetching the NGINX source needs apt as root")
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "build.log"
    binary = WORK / "objs" / "nginx"
    try:
        src = _fetch_source(log)
        _run(["./configure", "--with-compat", "--with-threads", "--add-module=%s" % REPO,
              "--builddir=%s" % (WORK / "objs")], src, log)
        _run(["make", "-f", str(WORK / "objs" / "Makefile"), "-j%d" % (os.cpu_count() or 2)], src, log)
    except subprocess.CalledProcessError:
        pytest.fail("static build failed; tail of %s:\n%s" % (log, "".join(open(log).readlines()[-30:])))
    return binary


def test_built_in_module_enforces_caps(static_nginx, nginx_factory, redis, fake):
    version = subprocess.run([str(static_nginx), "-V"], capture_output=True, text=True).stderr
    assert "--add-module=%s" % REPO in version

    ng = nginx_factory(binary=str(static_nginx))
    ok = post(ng.url, "/v1/chat/completions", chat_body(), secret=SECRETS["k1"],
              headers={"x-fake-input-tokens": "1000", "x-fake-output-tokens": "1000"})
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-spend-scope"]
    keys = all_counter_keys(CHAINS["k1"], "spend")
    # 1000 tokens at 0.15 + 1000 at 0.60 USD per million (support.MODELS gpt-4o-mini)
    assert wait_until(lambda: set(read_counters(redis, keys).values()) == {750_000}, timeout=3), \
        read_counters(redis, keys)

    denied = post(ng.url, "/v1/chat/completions", chat_body(), secret="sk-not-a-key")
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"
    assert len(fake.requests()) == 1
