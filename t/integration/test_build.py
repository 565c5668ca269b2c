"""The addon script builds into any NGINX source tree, statically too.

The other tests load the dynamic module built against Debian's nginx-dev (headers
only). This one takes the full source of Debian's NGINX, builds NGINX with
`--add-module`, and checks the built-in module enforces caps. The source is fetched
once with apt (through a private apt configuration, leaving the machine's alone) and
the build is kept in build/static/.
"""

import os
import subprocess
from pathlib import Path

import pytest

from support import CHAINS, REPO, SECRETS, all_counter_keys, chat_body, post, read_counters, wait_until

WORK = REPO / "build" / "static"


def _run(cmd, cwd, log):
    with open(log, "a") as out:
        out.write("$ %s\n" % " ".join(map(str, cmd)))
        out.flush()
        subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900)


def _fetch_source(log):
    """Debian's NGINX source tree, via deb-src of the machine's own Debian mirror."""
    existing = sorted(WORK.glob("src/nginx-*/configure"))
    if existing:
        return existing[0].parent
    apt = WORK / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if not sources.exists():
        pytest.skip("no Debian apt sources on this machine to fetch the NGINX source from")
    (apt / "sources.list.d").mkdir(exist_ok=True)
    (apt / "sources.list.d" / "debian-src.sources").write_text(
        sources.read_text().replace("Types: deb\n", "Types: deb-src\n"))
    opts = ["-o", "Dir::Etc::SourceList=/dev/null", "-o", "Dir::Etc::SourceParts=%s" % (apt / "sources.list.d"),
            "-o", "Dir::State::Lists=%s" % (apt / "lists"), "-o", "APT::Sandbox::User=root"]
    _run(["apt-get", "-qq"] + opts + ["update"], WORK, log)
    (WORK / "src").mkdir(exist_ok=True)
    _run(["apt-get", "-qq"] + opts + ["source", "--download-only", "nginx"], WORK / "src", log)
    tarball = sorted((WORK / "src").glob("nginx_*.orig.tar.gz"))[0]
    _run(["tar", "xzf", tarball.name], WORK / "src", log)
    return sorted(WORK.glob("src/nginx-*/configure"))[0].parent


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
