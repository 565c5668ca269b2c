"""The Dockerfile, checked without building it (no Docker engine, no hadolint here;
npm's dockerfilelint has had no release since 2020): a small lint of its instructions.

Checked: FROM is a pinned Debian 12 tag; every COPY/ADD source exists (and .dockerignore
keeps build/ and .git out of the context); the build is scripts/build.sh; no apt-get
upgrade/dist-upgrade; every apt-get install has --no-install-recommends; a RUN that runs
apt-get update (build.sh does) removes /var/lib/apt/lists in the same RUN; a non-root
USER or a comment stating why it runs as root; EXPOSE equals the ports conf/nginx.conf
listens on publicly once the Dockerfile's own sed has run on it; CMD in exec form; each
RUN's shell text passes `bash -n`.

Not checked: that the image builds or runs (that needs a Docker engine).
"""

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from support import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions(text):
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1]  # Docker drops the backslash and the newline
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return out


@pytest.fixture(scope="module")
def dockerfile():
    text = DOCKERFILE.read_text()
    return text, instructions(text)


def of(insts, name):
    return [args for word, args in insts if word == name]


def test_from_is_a_pinned_debian_12_tag(dockerfile):
    froms = of(dockerfile[1], "FROM")
    assert len(froms) == 1, froms
    image = froms[0].split()[0]
    # debian:12.N[-slim] or a digest; not debian:bookworm / debian:12 / latest (they move)
    assert re.fullmatch(r"debian:12\.\d+(-slim)?(@sha256:[0-9a-f]{64})?|debian(:[\w.-]+)?@sha256:[0-9a-f]{64}",
                        image), image


def test_copy_and_add_sources_exist(dockerfile):
    for word in ("COPY", "ADD"):
        for args in of(dockerfile[1], word):
            if args.startswith("["):
                parts = json.loads(args)
            else:
                parts = [p for p in shlex.split(args) if not p.startswith("--")]
            assert len(parts) >= 2, args
            for source in parts[:-1]:
                assert (REPO / source).exists(), "%s %s: %s does not exist" % (word, args, source)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "build" in ignored and ".git" in ignored, ignored


def test_run_builds_with_build_sh_and_apt_hygiene(dockerfile):
    runs = of(dockerfile[1], "RUN")
    assert any("./scripts/build.sh" in r for r in runs), "no RUN calls scripts/build.sh"
    for r in runs:
        assert not re.search(r"apt-get\s+(-\S+\s+)*(dist-)?upgrade", r), "apt-get upgrade in: %s" % r
        for install in re.findall(r"apt-get\s+[^&|;]*\binstall\b[^&|;]*", r):
            assert "--no-install-recommends" in install, install
        if "apt-get update" in r or "./scripts/build.sh" in r:  # build.sh runs apt-get update
            assert re.search(r"rm -rf /var/lib/apt/lists/\*\s*$", r), \
                "the apt lists are not removed at the end of the RUN that fetched them: %s" % r


def test_run_shell_text_parses(dockerfile):
    for r in of(dockerfile[1], "RUN"):
        if r.startswith("["):
            continue
        proc = subprocess.run(["bash", "-n"], input=r, capture_output=True, text=True)
        assert proc.returncode == 0, "%s\n%s" % (r, proc.stderr)


def test_user_or_stated_reason(dockerfile):
    users = of(dockerfile[1], "USER")
    if users:
        assert users[-1].split(":")[0] not in ("root", "0"), users
    else:
        assert re.search(r"(?m)^# Runs as root: \S", dockerfile[0]), \
            "no USER and no '# Runs as root: <why>' comment"


def listen_ports(conf_text):
    """Ports of listen directives on every address (no address, *, 0.0.0.0 or [::])."""
    ports = set()
    for m in re.finditer(r"(?m)^\s*listen\s+([^;\s]+)[^;]*;", conf_text):
        addr = m.group(1)
        host, _, port = addr.rpartition(":")
        if not host and addr.isdigit():
            ports.add(int(addr))
        elif host in ("*", "0.0.0.0", "[::]") and port.isdigit():
            ports.add(int(port))
    return ports


def test_expose_matches_the_conf(dockerfile, tmp_path):
    text, insts = dockerfile
    exposed = {int(p.split("/")[0]) for args in of(insts, "EXPOSE") for p in args.split()}
    conf = tmp_path / "nginx.conf"
    conf.write_text((REPO / "conf" / "nginx.conf").read_text())
    # the Dockerfile's own sed expressions on /etc/spend-cap/nginx.conf, run on a copy
    seds = re.findall(r"sed -i ('[^']*') /etc/spend-cap/nginx\.conf", "\n".join(of(insts, "RUN")))
    for expr in seds:
        subprocess.run(["sed", "-i", shlex.split(expr)[0], str(conf)], check=True)
    assert exposed and exposed == listen_ports(conf.read_text()), (exposed, listen_ports(conf.read_text()))


def test_cmd_is_exec_form(dockerfile):
    cmds = of(dockerfile[1], "CMD")
    assert len(cmds) == 1
    cmd = json.loads(cmds[0])
    assert isinstance(cmd, list) and all(isinstance(c, str) for c in cmd)
    if cmd[:2] == ["sh", "-c"]:
        proc = subprocess.run(["sh", "-n", "-c", cmd[2]], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
