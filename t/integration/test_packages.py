"""The Debian packages (scripts/package.sh, debian/): their contents, their
dependencies (the nginx-abi-* of the nginx they were built against, the libraries),
lintian; then, as root, installed with apt-get as a user would: the module enabled by
its link in /etc/nginx/modules-enabled and working in an NGINX that includes that
directory (402 for a capped key, 200 for an allowed one, with a real redis-server and
the fake provider), disabled again by apt-get remove; the relay's binary, user, unit
(systemd-analyze verify) and removal.

The other integration tests load build/ngx_http_spend_cap_module.so, never the
installed one: installing adds only /usr/lib/nginx/modules/ngx_http_spend_cap_module.so
and the link, and every package installed here is purged at the end (the relay's
system user deleted if this test created it)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import (CAPS, CHAINS, NGINX_BIN, SECRETS, chat_body, counter_key, estimate_nanos, post,
                     usd_nanos)

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"
MODULE_PKG = "libnginx-mod-http-spend-cap"
RELAY_PKG = "spend-cap-relay"
LINK = Path("/etc/nginx/modules-enabled/50-mod-http-spend-cap.conf")
SNIPPET = "/usr/share/nginx/modules-available/mod-http-spend-cap.conf"
SO = Path("/usr/lib/nginx/modules/ngx_http_spend_cap_module.so")
UNIT = Path("/lib/systemd/system/spend-cap-relay.service")
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"]
ENV = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="installing a package needs root (apt-get install)")


def run(cmd, **kw):
    kw.setdefault("timeout", 240)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)


def status(pkg):
    """dpkg's status word of pkg ("installed", "config-files", ...) or None."""
    r = run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg])
    return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture(scope="module")
def packages():
    """scripts/package.sh, once: the two .debs in build/ and what it printed."""
    started = time.monotonic()
    r = subprocess.run([str(REPO / "scripts" / "package.sh")], capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    out = r.stdout + r.stderr
    debs = {}
    for pkg in (MODULE_PKG, RELAY_PKG):
        found = sorted(BUILD.glob("%s_*.deb" % pkg))
        assert len(found) == 1, "expected one build/%s_*.deb, found %s\n%s" % (pkg, found, out[-4000:])
        debs[pkg] = found[0]
    print("package.sh: %.0f s, rc %d" % (seconds, r.returncode))
    return SimpleNamespace(rc=r.returncode, out=out, module=debs[MODULE_PKG], relay=debs[RELAY_PKG],
                           seconds=seconds)


def contents(deb):
    listing = run(["dpkg-deb", "-c", str(deb)]).stdout
    return {line.split()[5].lstrip(".") for line in listing.splitlines()}


def field(deb, name):
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def nginx_abi():
    """The nginx-abi-* Debian's installed nginx provides."""
    for pkg in ("nginx", "nginx-core", "nginx-light", "nginx-full", "nginx-extras"):
        provides = run(["dpkg-query", "-W", "-f=${Provides}", pkg]).stdout
        m = re.search(r"nginx-abi-[\w.~+-]+", provides)
        if m:
            return m.group(0)
    pytest.skip("no installed nginx package provides an nginx-abi-*")


def test_module_package_contents(packages):
    files = contents(packages.module)
    assert str(SO) in files
    assert SNIPPET in files
    doc = "/usr/share/doc/%s/" % MODULE_PKG
    for f in ("copyright", "README.md.gz", "openapi.yaml", "examples/policy.yaml", "examples/nginx.conf"):
        assert doc + f in files, (f, sorted(files))
    # the link is the maintainer scripts' (dh_nginx), never a file of the package
    assert not any(f.startswith("/etc/") for f in files)
    snippet = run(["sh", "-c", "dpkg-deb --fsys-tarfile '%s' | tar -xOf - .%s" % (packages.module, SNIPPET)])
    assert snippet.stdout == "load_module modules/ngx_http_spend_cap_module.so;\n"
    assert re.fullmatch(r"\d[\w.+~]*", field(packages.module, "Version"))


def test_module_depends_on_the_abi_and_its_libraries(packages):
    depends = [d.strip() for d in field(packages.module, "Depends").split(",")]
    assert nginx_abi() in depends, depends
    for lib in ("libhiredis", "libyaml-cpp", "libjansson", "libssl", "libdate-tz", "tzdata"):
        assert any(d.startswith(lib) for d in depends), (lib, depends)


def test_relay_package_contents(packages):
    files = contents(packages.relay)
    for f in ("/usr/bin/spend-cap-relay", str(UNIT), "/usr/share/doc/spend-cap-relay/examples/relay.yaml",
              "/usr/share/man/man1/spend-cap-relay.1.gz", "/usr/share/doc/spend-cap-relay/copyright"):
        assert f in files, (f, sorted(files))
    assert not any(f.startswith("/etc/") for f in files), "the relay's file holds secrets: no conffile"
    depends = field(packages.relay, "Depends")
    for lib in ("libhiredis", "libyaml-cpp", "libcurl", "adduser"):
        assert lib in depends, (lib, depends)
    assert field(packages.relay, "Version") == field(packages.module, "Version")


def test_lintian(packages):
    """package.sh exits non-zero on a lintian error; anything else it printed is listed."""
    tags = [l for l in packages.out.splitlines() if re.match(r"[EWIXPO]: ", l)]
    print("lintian:\n" + ("\n".join(tags) or "clean"))
    assert packages.rc == 0, packages.out[-4000:]
    assert not [t for t in tags if t.startswith("E: ")], tags


@needs_root
def test_module_installed_enabled_works_and_removed(packages, nginx_factory, redis, fake, tmp_path):
    if status(MODULE_PKG) is not None:
        pytest.skip("%s is already on this machine (%s): not touching it" % (MODULE_PKG, status(MODULE_PKG)))
    try:
        r = run(APT + ["install", "--no-install-recommends", str(packages.module)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert status(MODULE_PKG) == "installed"
        assert LINK.is_symlink() and os.readlink(LINK) == SNIPPET, "postinst did not enable the module"
        assert SO.is_file()

        # Debian's way: the configuration includes modules-enabled (load_module
        # modules/... is relative to the prefix, Debian's /usr/share/nginx/modules ->
        # /usr/lib/nginx/modules; here a temporary prefix with the same link).
        ng = nginx_factory(start=False, binary=NGINX_BIN,
                           main_extra="include /etc/nginx/modules-enabled/*.conf;")
        assert "load_module" not in ng.conf_text.split("include /etc/nginx/modules-enabled")[0]
        (ng.dir / "modules").symlink_to("/usr/lib/nginx/modules")
        t = ng.test_config()
        assert t.returncode == 0, t.stderr
        ng.start()

        # k1's daily cap one nano-USD short of room for the request: 402, the provider
        # never asked; k_open (no key limits, same project and org): 200
        body = chat_body(max_tokens=100)
        cap = usd_nanos(CAPS[("key", "daily")])
        redis.set(counter_key("acme", "spend", "key", CHAINS["k1"]["key"], "daily"),
                  cap - estimate_nanos("gpt-4o-mini", len(body), 100) + 1)
        r = post(ng.url, "/v1/chat/completions", body, SECRETS["k1"])
        assert r.status_code == 402, r.text
        assert r.json()["error"]["code"] == "spend_limit_exceeded"
        assert fake.requests() == [], "a blocked request reached the provider"
        r = post(ng.url, "/v1/chat/completions", body, SECRETS["k_open"])
        assert r.status_code == 200, r.text
        assert len(fake.requests()) == 1
        ng.stop()

        r = run(APT + ["remove", MODULE_PKG])
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.lexists(LINK), "apt-get remove left the module enabled"
        assert not SO.exists()
        # Debian's modules keep the admin's choice as a dangling NAME.removed link
        # until purge (it is not *.conf: nothing includes it).
        r = run(APT + ["purge", MODULE_PKG])
        assert r.returncode == 0, r.stdout + r.stderr
        assert not os.path.lexists(str(LINK) + ".removed")
        assert status(MODULE_PKG) is None
    finally:
        if status(MODULE_PKG) is not None:
            run(APT + ["purge", MODULE_PKG])


@pytest.fixture(scope="module")
def relay_installed(packages):
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root (apt-get install)")
    if status(RELAY_PKG) is not None:
        pytest.skip("%s is already on this machine (%s): not touching it" % (RELAY_PKG, status(RELAY_PKG)))
    had_user = run(["getent", "passwd", "spend-cap-relay"]).returncode == 0
    try:
        r = run(APT + ["install", "--no-install-recommends", str(packages.relay)])
        assert r.returncode == 0, r.stdout + r.stderr
        yield
    finally:
        if status(RELAY_PKG) is not None:
            run(APT + ["purge", RELAY_PKG])
        if not had_user and run(["getent", "passwd", "spend-cap-relay"]).returncode == 0:
            run(["deluser", "--system", "--quiet", "spend-cap-relay"])
            run(["delgroup", "--system", "--quiet", "spend-cap-relay"])


def test_relay_installed_checks_the_example(relay_installed, tmp_path):
    assert status(RELAY_PKG) == "installed"
    assert run(["getent", "passwd", "spend-cap-relay"]).returncode == 0, "postinst made no user"
    assert UNIT.is_file()
    # the example, with the repository's policy for its policy file
    example = Path("/usr/share/doc/spend-cap-relay/examples/relay.yaml").read_text()
    conf = tmp_path / "relay.yaml"
    conf.write_text(example.replace("policy: /etc/spend-cap/policy.yaml",
                                    "policy: %s" % (REPO / "conf" / "policy.yaml")))
    r = run(["/usr/bin/spend-cap-relay", "--check", "-c", str(conf)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "spend-cap-relay: %s: ok (2 endpoints)" % conf
    r = run(["/usr/bin/spend-cap-relay", "--no-such-option"])
    assert r.returncode == 2 and "usage:" in r.stderr


def test_relay_unit_verifies(relay_installed):
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    for line in ("User=spend-cap-relay", "ConditionPathExists=/etc/spend-cap/relay.yaml", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                 "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n"):
        assert line in text, line
    man = Path("/usr/share/man/man1/spend-cap-relay.1.gz").exists()
    r = run(["systemd-analyze", "verify", "--man=%s" % ("yes" if man else "no"), str(UNIT)], timeout=60)
    out = r.stdout + r.stderr
    if r.returncode != 0 and "spend-cap-relay.service" not in out:
        pytest.skip("systemd-analyze cannot run here: %s" % out.strip()[-300:])
    assert r.returncode == 0 and "spend-cap-relay" not in out, out


def test_relay_removed(relay_installed):
    r = run(APT + ["remove", RELAY_PKG])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not Path("/usr/bin/spend-cap-relay").exists()
    assert not UNIT.exists()
