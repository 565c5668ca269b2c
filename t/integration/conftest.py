"""pytest fixtures: a real redis-server, the fake provider, NGINX with the module.

Modelled on nginxinc/nginx-otel tests/conftest.py: every NGINX gets its own prefix
directory with an nginx.conf rendered from a template, is started in the foreground
(daemon off, master + 2 workers), and on teardown is terminated and its error.log is
checked for [alert], [emerg] and crashed workers.

Customise an NGINX per test with the marker

    @pytest.mark.nginx(policy=<dict or YAML text>, location_extra="spend_cap_fail_mode open;",
                       server_extra=..., http_extra=..., redis_addr="127.0.0.1:1")

or start more with the `nginx_factory` fixture. Environment:
    SPEND_CAP_MODULE     the module .so (default <repo>/build/ngx_http_spend_cap_module.so)
    TEST_NGINX_BINARY    nginx (default /usr/sbin/nginx)
    TEST_NGINX_CATLOG=1  print error.log of every NGINX at teardown
"""

import os
import shutil
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import support  # noqa: E402
from admin_support import PREFIX, TOKEN, Api  # noqa: E402
from support import FakeProvider, Nginx, RedisServer  # noqa: E402


try:  # let crashed NGINX workers leave a core dump in their prefix directory
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
except (ImportError, ValueError, OSError):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "nginx(**kwargs): options of the test's NGINX (see conftest.py)")


TEST_TIMEOUT = int(os.environ.get("SPEND_CAP_TEST_TIMEOUT", "300"))


@pytest.fixture(autouse=True)
def _per_test_timeout():
    """No single test may hang the suite (pytest-timeout is not a Debian package here)."""
    def expired(signum, frame):
        raise TimeoutError("test exceeded %d s (SPEND_CAP_TEST_TIMEOUT)" % TEST_TIMEOUT)
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session", autouse=True)
def module_snapshot(tmp_path_factory):
    """Loads a private copy of the module: rebuilding build/*.so in place while NGINX
    has it mapped would crash the workers under test."""
    if support.MODULE.exists():
        copy = tmp_path_factory.mktemp("module") / support.MODULE.name
        shutil.copy2(support.MODULE, copy)
        support.MODULE_LOADED = copy
    yield support.MODULE_LOADED


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def fake_provider(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake")
    fp = FakeProvider(log_path=str(d / "fake_provider.log")).start()
    yield fp
    fp.stop()


@pytest.fixture
def redis(redis_server):
    """A client of the session redis-server, flushed before the test."""
    r = redis_server.client()
    r.flushall()
    yield r
    r.close()


@pytest.fixture
def fake(fake_provider):
    """The session fake provider with its request log reset."""
    fake_provider.reset()
    return fake_provider


@pytest.fixture
def redis_factory(tmp_path):
    """Starts dedicated redis-servers (to stop, pause or restart in a test)."""
    servers = []

    def make(**kwargs):
        srv = RedisServer(tmp_path / ("redis%d" % len(servers)), **kwargs).start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def nginx_factory(tmp_path, redis_server, fake_provider, request):
    """nginx_factory(**options) -> a started Nginx (options as for the marker)."""
    started = []

    def make(start=True, **opts):
        opts.setdefault("fake_port", fake_provider.port)
        if "redis_addr" not in opts:
            opts.setdefault("redis_port", redis_server.port)
        ng = Nginx(tmp_path / ("nginx%d" % len(started)), **opts)
        started.append(ng)
        if start:
            ng.start()
        return ng

    yield make
    errors = []
    for ng in started:
        try:
            ng.stop(check=False)
            if os.environ.get("TEST_NGINX_CATLOG", "0") in ("1", "true"):
                sys.stderr.write("--- %s\n%s\n" % (ng.error_log, ng.error_text()))
            ng.check_error_log()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def nginx(nginx_factory, request, redis, fake):
    """The test's NGINX, configured by @pytest.mark.nginx(...); Redis flushed and the
    fake provider's request log reset."""
    marker = request.node.get_closest_marker("nginx")
    opts = dict(marker.kwargs) if marker else {}
    return nginx_factory(**opts)


@pytest.fixture
def admin_factory(nginx_factory, tmp_path, redis, fake):
    """admin_factory(**nginx options) -> Api of a started NGINX with the API at /spend-cap/."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(TOKEN + "\n")
    os.chmod(token_file, 0o600)

    def make(**opts):
        extra = opts.pop("server_extra", "")
        ng = nginx_factory(server_extra="location %s/ { spend_cap_admin %s; }\n%s" % (PREFIX, token_file, extra),
                           **opts)
        return Api(ng)
    return make


@pytest.fixture
def api(admin_factory):
    return admin_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the test (item.rep_setup, rep_call, rep_teardown):
    the browser fixture takes a screenshot when the test failed."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def browser(tmp_path, request):
    """A headless chromium (browser_support.Browser) with its own profile under tmp_path;
    quit at teardown, after a screenshot named after the test when the test failed."""
    from browser_support import Browser  # selenium is only needed by the browser tests
    b = Browser(tmp_path / "browser")
    yield b
    try:
        failed = any(getattr(request.node, "rep_" + when, None) is not None
                     and getattr(request.node, "rep_" + when).failed for when in ("setup", "call"))
        if failed:
            try:
                path = b.screenshot("%s__%s" % (request.node.path.stem, request.node.name))
                sys.stderr.write("screenshot of the failed test: %s\n" % path)
            except Exception as e:  # the browser may be what failed
                sys.stderr.write("no screenshot of the failed test: %s\n" % e)
    finally:
        b.quit()
