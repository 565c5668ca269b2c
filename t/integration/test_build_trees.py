"""scripts/build.sh against an NGINX source tree that is not Debian's (issue 23).

One upstream tree is fetched (scripts/fetch_nginx.sh: Debian trixie's 1.26.x, else
bookworm's 1.22.1, from the package mirror) into build/trees/upstream/ and kept
there for later runs. From it:

  - a git-layout tree (the tarball's `configure` moved to `auto/configure`, as in a
    nginx/nginx checkout) in the test's temporary directory: "the user's tree";
  - a plain NGINX binary WITHOUT --with-compat, built from another copy, with quoted
    --with-cc-opt/--with-ld-opt (kept in build/trees/plain-<version>/ for later runs);
  - ONE module build: NGINX_SRC=<git-layout tree> NGINX_BINARY=<that nginx>
    OUT=<tmp> RELAY=0 scripts/build.sh, i.e. configured with exactly the binary's
    `nginx -V` arguments (it would refuse a --with-compat module) and `auto/configure`.

The module then loads into that binary and caps spend (200, then 402 for a key at its
cap), and the user's tree is byte for byte as it was (no Makefile, no objs/).

Not tested, to keep CI short: that the binary refuses a plain --with-compat module
("is not binary compatible"; it would cost a second module build), and STATIC=1
(test_build.py builds NGINX with --add-module by hand).

Each build's wall time is printed (pytest -s shows it) and recorded in
build/trees/timings.txt.

Nothing fetchable (exit 2 of fetch_nginx.sh) is a skip whose reason says so, but a
failure under CI (env CI set): there it must not quietly stop running.
"""

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from support import CHAINS, REPO, SECRETS, chat_body, counter_key, estimate_nanos, post, usd_nanos

WORK = Path(os.environ.get("SPEND_CAP_TREES_CACHE", str(REPO / "build" / "trees")))
JOBS = os.environ.get("JOBS", "2")
PARSER = REPO / "scripts" / "nginx_configure_args.sh"
# quoted words, as nginx -V prints an option whose value has spaces
CC_OPT = "-g -O2 -fstack-protector-strong -Wformat"
LD_OPT = "-Wl,-z,relro -Wl,-z,now"


def _timed(what, cmd, log, **kwargs):
    start = time.monotonic()
    with open(log, "a") as out:
        out.write("$ %s\n" % " ".join(map(str, cmd)))
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=2400, **kwargs)
    took = time.monotonic() - start
    line = "%s: %.0f s (exit %d)" % (what, took, proc.returncode)
    print("\n[build time] " + line)
    with open(WORK / "timings.txt", "a") as t:
        t.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line))
    if proc.returncode != 0:
        pytest.fail("%s failed (exit %d); tail of %s:\n%s"
                    % (what, proc.returncode, log, "".join(open(log).readlines()[-40:])))
    return took


def _version(tree):
    for line in (Path(tree) / "src" / "core" / "nginx.h").read_text().splitlines():
        if line.startswith("#define NGINX_VERSION"):
            return line.split('"')[1]
    raise AssertionError("no NGINX_VERSION in %s" % tree)


def _upstream():
    """The fetched upstream tree (fetched once, kept in WORK/upstream)."""
    tree = WORK / "upstream"
    if (tree / "src" / "core" / "nginx.h").exists() and (tree / "configure").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    new = WORK / "upstream.new"
    shutil.rmtree(new, ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts" / "fetch_nginx.sh"), "auto", str(new)],
                          capture_output=True, text=True, timeout=900)
    print("\n[fetch] %.0f s: %s%s" % (time.monotonic() - start, proc.stderr, proc.stdout))
    if proc.returncode == 2:
        reason = ("NOT TESTED: no NGINX source tree could be fetched from the Debian mirror, so "
                  "building against another tree is unverified here.\n" + proc.stderr)
        if os.environ.get("CI"):
            pytest.fail(reason + "\n(CI is set: this must not be a skip)")
        pytest.skip(reason)
    assert proc.returncode == 0, "fetch_nginx.sh exit %d:\n%s%s" % (proc.returncode, proc.stdout, proc.stderr)
    new.rename(tree)
    return tree


def _plain_binary(upstream, log):
    """NGINX built from a copy of upstream WITHOUT --with-compat; kept for later runs."""
    version = _version(upstream)
    prefix = WORK / ("plain-%s" % version)
    binary = prefix / "sbin" / "nginx"
    if binary.exists():
        return binary
    src = WORK / ("plain-src-%s" % version)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(prefix, ignore_errors=True)
    shutil.copytree(upstream, src, symlinks=True)
    _timed("plain NGINX %s binary (no --with-compat)" % version,
           ["./configure", "--prefix=%s" % prefix, "--without-http_rewrite_module",
            "--without-http_gzip_module", "--with-cc-opt=%s" % CC_OPT, "--with-ld-opt=%s" % LD_OPT],
           log, cwd=src)
    _timed("make (plain NGINX)", ["make", "-j%s" % JOBS], log, cwd=src)
    _timed("make install (plain NGINX)", ["make", "install"], log, cwd=src)
    shutil.rmtree(src)
    return binary


def _listing(tree):
    """path -> (type, size, mtime_ns, sha256 of content) of every entry under tree."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = None
            if p.is_file() and not p.is_symlink():
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(tree))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.fixture(scope="module")
def tree_build(tmp_path_factory):
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "build.log"
    upstream = _upstream()
    binary = _plain_binary(upstream, log)
    version_text = subprocess.run([str(binary), "-V"], capture_output=True, text=True).stderr
    assert "--with-compat" not in version_text, version_text

    tmp = tmp_path_factory.mktemp("trees")
    user_tree = tmp / "nginx-git"
    shutil.copytree(upstream, user_tree, symlinks=True)
    (user_tree / "configure").rename(user_tree / "auto" / "configure")  # nginx/nginx's layout
    before = _listing(user_tree)
    out = tmp / "out"
    env = dict(os.environ, NGINX_SRC=str(user_tree), NGINX_BINARY=str(binary), OUT=str(out),
               RELAY="0", JOBS=JOBS)
    env.pop("SANITIZE", None)
    took = _timed("module against NGINX %s, git layout, NGINX_BINARY (build.sh)" % _version(upstream),
                  [str(REPO / "scripts" / "build.sh")], log, env=env)
    return {"binary": binary, "tree": user_tree, "before": before, "out": out, "took": took,
            "upstream": upstream, "log": log}


def test_module_built_for_a_non_compat_binary_loads_and_caps(tree_build, nginx_factory, redis, fake):
    module = tree_build["out"] / "ngx_http_spend_cap_module.so"
    assert module.exists()
    # configured with the binary's own arguments (NGX_CONFIGURE: what nginx -V prints)
    auto_config = (tree_build["out"] / "nginx-objs" / "ngx_auto_config.h").read_text()
    configured = [line for line in auto_config.splitlines() if line.startswith("#define NGX_CONFIGURE ")]
    assert configured and "--with-compat" not in configured[0], configured
    assert "--with-cc-opt='%s'" % CC_OPT in configured[0] and "--without-http_rewrite_module" in configured[0]
    assert "--add-dynamic-module=%s" % REPO in configured[0]
    ng = nginx_factory(binary=str(tree_build["binary"]), module_path=str(module))
    # The capped request first: an allowed one's settlement (reserve, then the
    # difference to the real cost) would race with the counter set here.
    body = chat_body(max_tokens=100)
    estimate = estimate_nanos("gpt-4o-mini", len(body), 100)
    # k1's daily counter one nano-USD short of room for this request
    redis.set(counter_key("acme", "spend", "key", CHAINS["k1"]["key"], "daily"), usd_nanos("2") - estimate + 1)
    capped = post(ng.url, "/v1/chat/completions", body, secret=SECRETS["k1"])
    assert capped.status_code == 402, capped.text
    assert capped.json()["error"]["code"] == "spend_limit_exceeded"
    assert fake.requests() == []

    ok = post(ng.url, "/v1/chat/completions", chat_body(), secret=SECRETS["kb"])
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-spend-scope"]
    assert len(fake.requests()) == 1


def test_the_users_tree_is_left_as_it_was(tree_build):
    tree = tree_build["tree"]
    after = _listing(tree)
    assert not (tree / "Makefile").exists()
    assert not (tree / "objs").exists()
    added = sorted(set(after) - set(tree_build["before"]))
    removed = sorted(set(tree_build["before"]) - set(after))
    changed = sorted(p for p in after if p in tree_build["before"] and after[p] != tree_build["before"][p])
    assert (added, removed, changed) == ([], [], []), "build.sh wrote into the user's tree"
    # the private copy is where configure ran
    assert (tree_build["out"] / "nginx-tree" / "Makefile").exists()


def test_a_binary_of_another_version_is_refused_before_building(tree_build, tmp_path):
    """/usr/sbin/nginx (Debian's) against the fetched tree: a clear error, nothing built."""
    debian_nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(debian_nginx).exists():
        pytest.skip("no Debian nginx binary here")
    other = subprocess.run([debian_nginx, "-v"], capture_output=True, text=True).stderr
    version = _version(tree_build["tree"])
    if "/%s" % version in other:
        pytest.skip("Debian's nginx is the fetched tree's version (%s)" % version)
    env = dict(os.environ, NGINX_SRC=str(tree_build["tree"]), NGINX_BINARY=debian_nginx,
               OUT=str(tmp_path / "out"), RELAY="0")
    proc = subprocess.run([str(REPO / "scripts" / "build.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "the tree %s is %s" % (tree_build["tree"], version) in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "nginx-tree").exists()


def _parse(text, *flags):
    proc = subprocess.run([str(PARSER)] + list(flags), input=text, capture_output=True, text=True, timeout=30)
    return proc


def test_configure_arguments_are_split_like_a_shell_would():
    v = ("nginx version: nginx/1.22.1\nbuilt with OpenSSL 3.0.15\nTLS SNI support enabled\n"
         "configure arguments: --with-cc-opt='-g -O2 -ffile-prefix-map=/x=. -fstack-protector-strong' "
         "--with-ld-opt='-Wl,-z,relro -Wl,-z,now -fPIC' --prefix=/usr/share/nginx --with-compat "
         "--add-dynamic-module=/build/a\\ b --with-x=\"q \\\"x\\\" \\$HOME\" $(touch /tmp/nope) `id`\n")
    want = ["--with-cc-opt=-g -O2 -ffile-prefix-map=/x=. -fstack-protector-strong",
            "--with-ld-opt=-Wl,-z,relro -Wl,-z,now -fPIC", "--prefix=/usr/share/nginx", "--with-compat",
            "--add-dynamic-module=/build/a b", '--with-x=q "x" $HOME', "$(touch", "/tmp/nope)", "`id`"]
    proc = _parse(v)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:-1] == want
    proc = _parse(v, "-0")
    assert proc.stdout.split("\0")[:-1] == want
    assert not Path("/tmp/nope").exists()


def test_configure_arguments_errors():
    assert _parse("configure arguments:\n").stdout == ""
    assert _parse("configure arguments: --a='b\n").returncode == 1
    assert _parse("nginx version: nginx/1.22.1\n").returncode == 1
