"""http_fetch's egress policy: the address and host rules of worker.jobtypes.egress (pure, with
an injected resolver), then the handler against the simulator and small local servers: refusals
make no connection, redirects stay on the allowed host, proxies and DNS rebinding are no way out.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from core.domain.failures import ErrorClass
from worker import sdk
from worker.devtools.upstream_sim import UpstreamSim
from worker.jobtypes import egress, http_fetch

PUBLIC_A = "93.184.216.34"
PUBLIC_B = "93.184.216.35"


def source(host: str, *, allow_private: bool = False, name: str = "feed") -> sdk.SourceInfo:
    return sdk.SourceInfo(7, name, host, allow_private)


class FakeResolver:
    """getaddrinfo's shape, from a table name -> answers; answer i is used on call i (the
    last one again after that), and every call is recorded."""

    def __init__(self, table: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int, family: int = 0, kind: int = 0, /) -> list[tuple[Any, ...]]:
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, f"no such name {host}")
        answer = answers[min(sum(c == host for c in self.calls), len(answers) - 1)]
        self.calls.append(host)
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port, 0, 0) if ":" in ip else (ip, port),
            )
            for ip in answer
        ]


def no_resolver(host: str, port: int, family: int = 0, kind: int = 0, /) -> list[tuple[Any, ...]]:
    raise AssertionError(f"the resolver was asked for {host}")


def refusal(url: str, src: sdk.SourceInfo | None = None, resolver: egress.Resolver = no_resolver) -> str:
    with pytest.raises(egress.Refused) as raised:
        egress.plan(url, src, resolver)
    return raised.value.reason


# -- the address rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.5.6.7", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.0.0.5", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.254", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.169.254", "the cloud metadata address"),
        ("fd00:ec2::254", "the cloud metadata address"),
        ("169.254.10.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("ff0e::1", "a multicast address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("100.127.255.254", "a carrier-grade NAT address"),
        ("192.0.2.1", "a documentation address"),
        ("198.51.100.7", "a documentation address"),
        ("203.0.113.9", "a documentation address"),
        ("2001:db8::1", "a documentation address"),
        ("198.18.0.1", "a benchmarking address"),
        ("255.255.255.255", "a broadcast address"),
        ("240.0.0.1", "a reserved address"),
        ("192.0.0.9", "a reserved address"),
        ("fec0::1", "a site-local address"),
        ("::7f00:1", "an IPv4-compatible address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("::ffff:10.1.2.3", "an IPv4-mapped form of 10.1.2.3, a private address"),
        ("::ffff:169.254.169.254", "an IPv4-mapped form of 169.254.169.254, the cloud metadata address"),
        ("2002:7f00:1::1", "a 6to4 form of 127.0.0.1, a loopback address"),
        ("2002:a9fe:a9fe::", "a 6to4 form of 169.254.169.254, the cloud metadata address"),
        ("64:ff9b::a00:5", "a NAT64 form of 10.0.0.5, a private address"),
        ("64:ff9b::7f00:1", "a NAT64 form of 127.0.0.1, a loopback address"),
        ("64:ff9b:1::1", "a local-use NAT64 address"),
        ("2001::1", "a reserved address"),  # Teredo
    ],
)
def test_non_public_addresses_are_named(address: str, problem: str) -> None:
    assert egress.address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", PUBLIC_A, "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"],
)
def test_public_addresses_pass(address: str) -> None:
    assert egress.address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://127.0.0.1/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/", "169.254.169.254"),
        ("http://012.0.0.5:5432/", "10.0.0.5"),
        ("http://[::1]:8080/", "::1"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ("http://[fe80::1]/", "fe80::1"),
    ],
)
def test_numeric_hosts_are_read_as_the_os_reads_them_and_refused(url: str, address: str) -> None:
    host = urlsplit(url).hostname or ""
    literal = egress.literal_address(host)
    assert literal == ipaddress.ip_address(address)
    # The OS agrees (numeric: getaddrinfo answers without asking DNS).
    assert {ipaddress.ip_address(a[4][0]) for a in socket.getaddrinfo(host, 80, 0, socket.SOCK_STREAM)} == {literal}
    reason = refusal(url)  # a numeric host never reaches the resolver
    assert "only jobs of a source added with --allow-private may fetch it" in reason
    problem = egress.address_problem(literal)
    assert problem is not None and problem in reason


def test_numeric_hosts_through_the_system_resolver_too() -> None:
    """With the default resolver (socket.getaddrinfo), as the handler runs."""
    for url in ("http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://localhost/"):
        with pytest.raises(egress.Refused, match="a loopback address"):
            egress.plan(url, None)


def test_a_name_is_refused_when_any_of_its_addresses_is_not_public() -> None:
    resolver = FakeResolver({"mixed.example": [[PUBLIC_A, "10.0.0.7"]], "meta.example": [["169.254.169.254"]]})
    assert refusal("https://mixed.example/x", None, resolver) == (
        "mixed.example resolves to 10.0.0.7, which is a private address"
        " (only jobs of a source added with --allow-private may fetch it)"
    )
    reason = refusal("http://meta.example/", source("meta.example"), resolver)
    assert reason == (
        "meta.example resolves to 169.254.169.254, which is the cloud metadata address"
        " (add source feed with --allow-private to allow it)"
    )
    assert resolver.calls == ["mixed.example", "meta.example"]


def test_public_names_resolve_once_to_checked_addresses() -> None:
    resolver = FakeResolver({"feeds.example": [[PUBLIC_A, "2606:4700:4700::1111"]]})
    target = egress.plan("https://feeds.example/x?page=1", None, resolver)
    assert (target.scheme, target.host, target.port) == ("https", "feeds.example", 443)
    assert [str(a.ip) for a in target.addresses] == [PUBLIC_A, "2606:4700:4700::1111"]
    assert target.addresses[0].sockaddr == (PUBLIC_A, 443)
    assert resolver.calls == ["feeds.example"]


def test_allow_private_lets_a_source_reach_private_and_loopback_addresses() -> None:
    target = egress.plan("http://10.0.0.5:5432/", source("10.0.0.5:5432", allow_private=True), no_resolver)
    assert [str(a.ip) for a in target.addresses] == ["10.0.0.5"]
    assert target.addresses[0].sockaddr == ("10.0.0.5", 5432)
    resolver = FakeResolver({"db.internal": [["10.0.0.5"]]})
    assert egress.plan("http://db.internal/", source("db.internal", allow_private=True), resolver).addresses
    assert "a private address" in refusal("http://db.internal/", source("db.internal"), resolver)


def test_a_unresolvable_name_is_an_os_error_not_a_refusal() -> None:
    with pytest.raises(OSError):
        egress.plan("http://nowhere.example/", None, FakeResolver({}))


# -- the host rules ---------------------------------------------------------------------


def test_a_job_of_a_source_may_fetch_only_its_host() -> None:
    nvd = source("services.nvd.nist.gov", name="nvd")
    assert refusal("https://evil.example/", nvd) == (
        "host evil.example is not the host of source nvd (services.nvd.nist.gov)"
    )
    assert "is not the host of source" in refusal("https://services.nvd.nist.gov.evil.example/", nvd)
    assert "is not the host of source" in refusal("https://nvd.nist.gov/", nvd)
    assert "is not the host of source" in refusal("http://169.254.169.254/", nvd)
    # The host check comes before any resolution: no_resolver was never called.


def test_hosts_compare_case_insensitively() -> None:
    resolver = FakeResolver({"services.nvd.nist.gov": [[PUBLIC_A]]})
    assert egress.plan("https://Services.NVD.nist.gov/x", source("services.nvd.nist.gov"), resolver).addresses
    assert egress.plan("https://services.nvd.nist.gov/x", source("SERVICES.nvd.NIST.gov"), resolver).addresses


def test_port_rules() -> None:
    resolver = FakeResolver({"api.example": [[PUBLIC_A]]})
    with_port = source("api.example:8443")
    assert refusal("https://api.example/", with_port, resolver) == (
        "port 443 is not the port of source feed (api.example:8443)"
    )
    assert refusal("http://api.example:8080/", with_port, resolver).startswith("port 8080 is not the port")
    assert egress.plan("https://api.example:8443/", with_port, resolver).port == 8443
    # The effective port counts: https without a port is 443.
    assert egress.plan("https://api.example/", source("api.example:443"), resolver).port == 443
    assert "port 80 is not" in refusal("http://api.example/", source("api.example:443"), resolver)
    # A source without a port allows any port of its host.
    for url in ("http://api.example/", "https://api.example/", "http://api.example:8080/"):
        assert egress.plan(url, source("api.example"), resolver).addresses


def test_other_schemes_and_hostless_urls_are_refused() -> None:
    assert refusal("ftp://api.example/x") == "scheme ftp is not http or https"
    assert refusal("file:///etc/passwd") == "scheme file is not http or https"
    assert refusal("http:///x") == "the URL has no host"


def test_without_a_source_redirects_stay_on_the_first_host() -> None:
    resolver = FakeResolver({"a.example": [[PUBLIC_A]], "b.example": [[PUBLIC_B]]})
    assert egress.plan("http://a.example:8080/next", None, resolver, origin="a.example").addresses
    assert egress.plan("http://b.example/", None, resolver).addresses  # a first URL: any public host
    with pytest.raises(egress.Refused, match=re.escape("host b.example is not a.example")):
        egress.plan("http://b.example/", None, resolver, origin="a.example")


# -- the handler, end to end --------------------------------------------------------------


class StandInContext:
    """The handler's input: a payload, the job's source, and the two report-back calls it uses."""

    def __init__(self, payload: Mapping[str, Any], src: sdk.SourceInfo | None) -> None:
        self.payload = payload
        self.source = src
        self.job_id = 1
        self.attempt = 1
        self.progress_calls: list[tuple[float, str | None]] = []
        self.lines: list[str] = []

    def progress(self, fraction: float, message: str | None = None) -> None:
        self.progress_calls.append((fraction, message))

    def log(self, message: str, level: str = "info") -> None:
        self.lines.append(message)


def run(url: str, src: sdk.SourceInfo | None, **payload: Any) -> StandInContext:
    ctx = StandInContext({"url": url, "timeout_s": 5, **payload}, src)
    http_fetch.http_fetch(ctx)  # type: ignore[arg-type]
    return ctx


def refused_fetch(url: str, src: sdk.SourceInfo | None) -> str:
    with pytest.raises(sdk.FatalError) as raised:
        run(url, src)
    assert raised.value.error_class == ErrorClass.EGRESS_REFUSED
    return str(raised.value)


@pytest.fixture(scope="module")
def sim() -> Iterator[UpstreamSim]:
    with UpstreamSim() as server:
        yield server


def requests_seen(sim: UpstreamSim, feed: str) -> int:
    return sum(sim.stats()[feed].values())


def sim_source(sim: UpstreamSim, *, allow_private: bool = True) -> sdk.SourceInfo:
    return source(f"127.0.0.1:{sim.port}", allow_private=allow_private, name="sim")


def test_a_job_without_a_source_may_not_fetch_the_loopback_simulator(sim: UpstreamSim) -> None:
    sim.configure("e-nosource")
    url = f"{sim.url}/feeds/e-nosource/items"
    assert refused_fetch(url, None) == (
        f"refused to fetch {url}: 127.0.0.1 is a loopback address"
        " (only jobs of a source added with --allow-private may fetch it)"
    )
    assert requests_seen(sim, "e-nosource") == 0
    # The same URL, for a job of the simulator's source that allows private addresses: the
    # simulator counts it (so the zero above is no blind spot).
    ctx = run(url, sim_source(sim))
    assert ctx.progress_calls == [(1.0, "3 items")]
    assert requests_seen(sim, "e-nosource") == 1


def test_a_source_that_does_not_allow_private_addresses_may_not_fetch_its_loopback_host(sim: UpstreamSim) -> None:
    sim.configure("e-strict")
    url = f"{sim.url}/feeds/e-strict/items"
    assert refused_fetch(url, sim_source(sim, allow_private=False)) == (
        f"refused to fetch {url}: 127.0.0.1 is a loopback address (add source sim with --allow-private to allow it)"
    )
    assert requests_seen(sim, "e-strict") == 0


def test_a_source_for_one_host_may_not_fetch_another(sim: UpstreamSim) -> None:
    sim.configure("e-host")
    url = f"{sim.url}/feeds/e-host/items"
    other = source("feeds.example.org", allow_private=True, name="feeds")
    assert refused_fetch(url, other) == (
        f"refused to fetch {url}: host 127.0.0.1 is not the host of source feeds (feeds.example.org)"
    )
    assert "is not the host of source" in refused_fetch(url, source(f"localhost:{sim.port}", allow_private=True))
    assert "is not the port of source" in refused_fetch(url, source(f"127.0.0.1:{sim.port + 1}", allow_private=True))
    assert requests_seen(sim, "e-host") == 0


def test_messages_never_show_credentials() -> None:
    message = refused_fetch("http://user:s3cret@10.0.0.5:5432/", None)
    assert message == (
        "refused to fetch http://10.0.0.5:5432/: 10.0.0.5 is a private address"
        " (only jobs of a source added with --allow-private may fetch it)"
    )
    assert "s3cret" not in refused_fetch("https://user:s3cret@evil.example/", source("services.nvd.nist.gov"))


# -- redirects ----------------------------------------------------------------------------


class Recorder:
    """A local HTTP server answering from `routes` (path -> status, headers, JSON body) and
    recording each request's path and Host header."""

    def __init__(self, routes: Mapping[str, tuple[int, Mapping[str, str], Any]] | None = None) -> None:
        self.routes: dict[str, tuple[int, Mapping[str, str], Any]] = dict(routes or {})
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Host")))
                status, headers, body = recorder.routes.get(self.path, (404, {}, {"error": "no route"}))
                data = json.dumps(body).encode()
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [path for path, _ in self.seen]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as r:
        yield r


def redirect(location: str, status: int = 302) -> tuple[int, Mapping[str, str], Any]:
    return (status, {"Location": location}, {"moved": True})


def test_a_redirect_on_the_allowed_host_is_followed(recorder: Recorder) -> None:
    recorder.routes["/start"] = redirect("/middle", 301)
    recorder.routes["/middle"] = redirect(f"{recorder.url}/final?x=1", 307)
    recorder.routes["/final?x=1"] = (200, {}, {"items": [1, 2]})
    ctx = run(f"{recorder.url}/start", source(f"127.0.0.1:{recorder.port}", allow_private=True))
    assert ctx.progress_calls == [(1.0, "2 items")]
    assert recorder.paths() == ["/start", "/middle", "/final?x=1"]


def test_a_redirect_to_another_host_is_refused_and_never_reached(recorder: Recorder, sim: UpstreamSim) -> None:
    sim.configure("e-redirect")
    elsewhere = f"http://localhost:{sim.port}/feeds/e-redirect/items"  # another name for the same machine
    recorder.routes["/away"] = redirect(elsewhere)
    src = source(f"127.0.0.1:{recorder.port}", allow_private=True, name="rec")
    assert refused_fetch(f"{recorder.url}/away", src) == (
        f"refused to follow the redirect from {recorder.url}/away to {elsewhere}:"
        f" host localhost is not the host of source rec (127.0.0.1:{recorder.port})"
    )
    # The same host on another port (the simulator's): refused too, the source has a port.
    recorder.routes["/port"] = redirect(f"{sim.url}/feeds/e-redirect/items")
    assert refused_fetch(f"{recorder.url}/port", src).endswith(
        f": port {sim.port} is not the port of source rec (127.0.0.1:{recorder.port})"
    )
    assert requests_seen(sim, "e-redirect") == 0
    assert recorder.paths() == ["/away", "/port"]


def test_a_redirect_to_another_scheme_is_refused(recorder: Recorder) -> None:
    recorder.routes["/ftp"] = redirect("ftp://127.0.0.1/x")
    message = refused_fetch(f"{recorder.url}/ftp", source(f"127.0.0.1:{recorder.port}", allow_private=True))
    assert message.endswith("to ftp://127.0.0.1/x: scheme ftp is not http or https")


def test_redirects_are_capped(recorder: Recorder) -> None:
    recorder.routes["/loop"] = redirect("/loop")
    message = refused_fetch(f"{recorder.url}/loop", source(f"127.0.0.1:{recorder.port}", allow_private=True))
    assert f"more than {http_fetch.MAX_REDIRECTS} redirects" in message
    assert recorder.paths() == ["/loop"] * (http_fetch.MAX_REDIRECTS + 1)


class Connector:
    """Stands in for the network: records the checked address each connection was opened
    to, and connects to the local `recorder` instead."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.addresses: list[str] = []

    def __call__(self, address: egress.Address, timeout_s: float) -> socket.socket:
        self.addresses.append(str(address.ip))
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s)


def test_each_redirect_is_checked_again_and_a_job_without_a_source_stays_on_its_host(recorder: Recorder) -> None:
    port = recorder.port
    recorder.routes["/to-b"] = redirect(f"http://b.example:{port}/x")
    recorder.routes["/again"] = redirect("/next")
    connector = Connector(port)
    for host, path, expected in (
        (
            "a.example",
            "/to-b",
            "host b.example is not a.example (a job without a source follows redirects on the same host only)",
        ),
        # The redirect's hop resolves the name again (a new connection), and this time it
        # answers a private address: refused as the first hop would be.
        ("c.example", "/again", "c.example resolves to 10.0.0.9, which is a private address"),
    ):
        resolver = FakeResolver({host: [[PUBLIC_A], ["10.0.0.9"]], "b.example": [[PUBLIC_B]]})
        with pytest.raises(sdk.FatalError) as raised:
            http_fetch.fetch(
                http_fetch.FetchRequest(f"http://{host}:{port}{path}"), None, resolver=resolver, connector=connector
            )
        assert raised.value.error_class == ErrorClass.EGRESS_REFUSED
        assert expected in str(raised.value)
        assert resolver.calls == [host] * (1 + (path == "/again"))
    assert connector.addresses == [PUBLIC_A, PUBLIC_A]
    assert recorder.paths() == ["/to-b", "/again"]


# -- proxies and DNS rebinding --------------------------------------------------------------


def test_proxy_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch, sim: UpstreamSim) -> None:
    with socket.socket() as proxy:  # a "proxy" that would see any connection made to it
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(8)
        proxy_url = f"http://127.0.0.1:{proxy.getsockname()[1]}"
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy_url)
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        sim.configure("e-proxy", items=2)
        # urllib keeps the opener it built, with the proxies it saw then: drop it, so that a
        # fetch through urllib would read these (and drop whatever read them, afterwards).
        urllib.request.install_opener(None)
        try:
            ctx = run(f"{sim.url}/feeds/e-proxy/items", sim_source(sim))
        finally:
            urllib.request.install_opener(None)
        assert ctx.progress_calls == [(1.0, "2 items")]
        assert requests_seen(sim, "e-proxy") == 1
        proxy.setblocking(False)
        with pytest.raises(BlockingIOError):
            proxy.accept()  # nothing connected to the proxy


def test_dns_rebinding_connects_only_to_the_address_checked(recorder: Recorder) -> None:
    """The name answers a public address first and loopback after: the fetch resolves once,
    checks, and connects to that address; the name is never looked up again."""
    port = recorder.port
    recorder.routes["/feed"] = (200, {}, {"items": [1]})
    resolver = FakeResolver({"rebind.example": [[PUBLIC_A], ["127.0.0.1"]]})
    connector = Connector(port)
    response = http_fetch.fetch(
        http_fetch.FetchRequest(f"http://rebind.example:{port}/feed"),
        source(f"rebind.example:{port}"),
        resolver=resolver,
        connector=connector,
    )
    assert response.status == 200
    assert resolver.calls == ["rebind.example"]
    assert connector.addresses == [PUBLIC_A]
    assert recorder.seen == [("/feed", f"rebind.example:{port}")]  # the original Host header
    # The next fetch gets the rebound answer, and is refused before connecting.
    with pytest.raises(sdk.FatalError, match=re.escape("rebind.example resolves to 127.0.0.1, which is a loopback")):
        http_fetch.fetch(
            http_fetch.FetchRequest(f"http://rebind.example:{port}/feed"),
            source(f"rebind.example:{port}"),
            resolver=resolver,
            connector=connector,
        )
    assert connector.addresses == [PUBLIC_A]
    assert len(recorder.seen) == 1


def test_a_name_with_any_private_address_is_refused_before_connecting(recorder: Recorder) -> None:
    port = recorder.port
    resolver = FakeResolver({"split.example": [[PUBLIC_A, "127.0.0.1"]]})
    connector = Connector(port)
    with pytest.raises(sdk.FatalError) as raised:
        http_fetch.fetch(
            http_fetch.FetchRequest(f"http://split.example:{port}/feed"), None, resolver=resolver, connector=connector
        )
    assert raised.value.error_class == ErrorClass.EGRESS_REFUSED
    assert connector.addresses == [] and recorder.seen == []


# -- https: the checked address, the original name's certificate ----------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> Path:
    """A self-signed certificate for tls.example (key and cert in tmp_path)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem"), "-days", "2",
            "-subj", "/CN=tls.example", "-addext", "subjectAltName=DNS:tls.example",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return tmp_path


@pytest.fixture
def tls_server(tls_files: Path) -> Iterator[tuple[Recorder, list[str | None]]]:
    """The recorder behind TLS with the tls.example certificate; the SNI names clients sent."""
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files / "cert.pem", tls_files / "key.pem")
    context.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    with Recorder({"/feed": (200, {}, {"items": [1, 2, 3]})}) as r:
        r.server.socket = context.wrap_socket(r.server.socket, server_side=True)
        yield r, names


def trust(monkeypatch: pytest.MonkeyPatch, cafile: Path) -> None:
    original = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: original(cafile=str(cafile)))


def test_https_connects_to_the_checked_address_and_verifies_the_names_certificate(
    monkeypatch: pytest.MonkeyPatch, tls_files: Path, tls_server: tuple[Recorder, list[str | None]]
) -> None:
    server, names = tls_server
    trust(monkeypatch, tls_files / "cert.pem")
    resolver = FakeResolver({"tls.example": [["127.0.0.1"]], "other.example": [["127.0.0.1"]]})
    allowed = source(f"tls.example:{server.port}", allow_private=True)
    response = http_fetch.fetch(
        http_fetch.FetchRequest(f"https://tls.example:{server.port}/feed"), allowed, resolver=resolver
    )
    assert response.status == 200
    assert names == ["tls.example"]
    assert server.seen == [("/feed", f"tls.example:{server.port}")]
    # Another name on the same address: the certificate does not match it, so no request.
    with pytest.raises(sdk.RetryableError) as raised:
        http_fetch.fetch(
            http_fetch.FetchRequest(f"https://other.example:{server.port}/feed"),
            source(f"other.example:{server.port}", allow_private=True),
            resolver=resolver,
        )
    assert raised.value.error_class == ErrorClass.NETWORK
    assert "certificate" in str(raised.value).lower()
    assert names == ["tls.example", "other.example"]
    assert len(server.seen) == 1
