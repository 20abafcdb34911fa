"""Where an import may fetch from: URL rules, address rules, and the pre-flight probe.

An import makes the *server* open a connection to a URL a client chose, so the rules are
those of any server-side fetch (SSRF):

- only ``https``; plain ``http`` only for hosts the operator allows (``import_allow_hosts``);
  no ``file://``, ``ssh://``, ``ext::`` or other transports, no credentials in the URL;
- the host is resolved here and *every* address it resolves to must be public (loopback,
  private, link-local, shared, reserved, multicast and cloud-metadata addresses are
  refused) unless the operator's list admits the host name or a CIDR holding the address;
- the connection is pinned to the address that was checked, for the probe below and for
  git (``http.curloptResolve``), so a DNS answer that changes in between (rebinding) is
  never used;
- redirects are followed here, one hop at a time, each target checked by the same rules,
  and git itself is told not to follow any (``http.followRedirects=false``).

The probe is git's first request (``GET <url>/info/refs?service=git-upload-pack``). It
tells before anything is created whether the URL is a git repository at all, which
branches it has, and its default branch.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from artifactd.errors import Code, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

MAX_URL = 2048
MAX_REDIRECTS = 5
PROBE_TIMEOUT = 20.0
MAX_ADVERTISEMENT = 64 << 20
SERVICE_SUFFIX = "/info/refs?service=git-upload-pack"
ADVERTISEMENT_TYPE = "application/x-git-upload-pack-advertisement"
USER_AGENT = "git/2.39 artifactd-import"

# Not caught by ``is_global`` everywhere: addresses clouds answer metadata on.
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def refused(message: str, pointer: str = "/url") -> ValidationError:
    return ValidationError(message, code=Code.IMPORT_REFUSED, pointer=pointer)


def unusable(message: str, pointer: str = "/url", code: Code = Code.INVALID_URL) -> ValidationError:
    """The URL leads to no importable git repository; ``code`` is the published code for why."""
    return ValidationError(message, code=code, pointer=pointer)


def unreachable(message: str) -> ValidationError:
    return unusable(message, code=Code.UPSTREAM_UNAVAILABLE)


@dataclass(frozen=True)
class AllowList:
    """The operator's ``import_allow_hosts``: host names and CIDRs (an IP is a /32 or /128)."""

    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, text: str) -> AllowList:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in text.split(","):
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def admits(self, host: str, address: IPAddress | None = None) -> bool:
        if host.lower().rstrip(".") in self.hosts:
            return True
        return address is not None and any(address in net for net in self.networks)


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why an address may not be fetched from (without an allowlist entry), or ``None``."""
    inner = _embedded_v4(address)
    if inner is not None:
        return address_problem(inner)
    if address in _METADATA:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_reserved or address.is_unspecified:
        return "a reserved address"
    if not address.is_global:
        return "not a public address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise unreachable(f"Could not resolve host {host!r}: {exc}") from None
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in seen:
            seen.append(address)
    return seen


@dataclass(frozen=True)
class Source:
    """A checked repository URL and the address it is pinned to."""

    url: str  # the repository URL, without a trailing slash
    scheme: str
    host: str
    port: int
    address: str  # the checked IP every connection goes to
    alternatives: tuple[str, ...] = ()  # other checked addresses, tried if ``address`` is down

    @property
    def host_is_literal(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def curl_resolve(self) -> str | None:
        """The ``http.curloptResolve`` entry that pins git to ``address``."""
        if self.host_is_literal:
            return None
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host}:{self.port}:{address}"


def _split(raw: str) -> SplitResult:
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise ValidationError("url must not contain spaces or control characters", pointer="/url")
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ValidationError(f"url is not a valid URL: {exc}", pointer="/url") from None
    return parts


def check_url(raw: object, allow: AllowList, resolve: Resolver = system_resolver) -> Source:
    """Apply every URL and address rule; returns the source pinned to a checked address."""
    if not isinstance(raw, str) or not raw:
        raise ValidationError("url is required", pointer="/url")
    if len(raw) > MAX_URL:
        raise ValidationError(f"url must be at most {MAX_URL} characters", pointer="/url")
    if "://" not in raw:
        if "::" in raw.split("/", 1)[0] or raw.startswith(("ext:", "fd:")):
            raise refused("Only https:// URLs can be imported (no git transports such as ext::)")
        raise ValidationError("url is not a URL: expected https://host/path", pointer="/url")
    parts = _split(raw)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise refused(f"Only https:// URLs can be imported, not {scheme}://")
    if parts.username is not None or parts.password is not None:
        raise refused("Credentials in the URL are not accepted: only public repos can be imported")
    if parts.query or parts.fragment:
        raise ValidationError("url must not have a query string or fragment", pointer="/url")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValidationError("url has no host", pointer="/url")
    port = parts.port or (443 if scheme == "https" else 80)
    if scheme == "http" and not allow.hosts and not allow.networks:
        raise refused("Plain http:// is only allowed for hosts on the server's import allowlist")
    addresses: list[IPAddress] = []
    for text in resolve(host, port):
        try:
            addresses.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    if not addresses:
        raise unreachable(f"Could not resolve host {host!r}")
    for address in addresses:
        problem = address_problem(address)
        if problem and not allow.admits(host, address):
            shown = host if host == str(address) else f"{host} ({address})"
            raise refused(f"Import from {shown} refused: {problem}")
    if scheme == "http" and not all(allow.admits(host, a) for a in addresses):
        raise refused("Plain http:// is only allowed for hosts on the server's import allowlist")
    path = parts.path.rstrip("/")
    netloc = parts.netloc
    texts = [str(a) for a in addresses]
    return Source(f"{scheme}://{netloc}{path}", scheme, host, port, texts[0], tuple(texts[1:]))


@dataclass(frozen=True)
class Probe:
    source: Source  # after redirects
    heads: dict[str, str]  # branch name -> commit
    tags: int
    head: str | None  # the branch HEAD points to, when the server says


def probe(
    source: Source, allow: AllowList, *, resolve: Resolver = system_resolver,
    timeout: float = PROBE_TIMEOUT,
) -> Probe:
    """Fetch the ref advertisement, following checked redirects; refuses what is not git."""
    current = source
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            url = current.url + SERVICE_SUFFIX
            current, response = _get(client, current, url)
            if response.status_code in (301, 302, 303, 307, 308):
                location = response.headers.get("location", "")
                target = urljoin(url, location)
                if not target.endswith(SERVICE_SUFFIX):
                    raise unusable(
                        f"The remote redirected to {target[:200]!r}, which is not a git repository"
                    )
                try:
                    current = check_url(target[: -len(SERVICE_SUFFIX)], allow, resolve)
                except ValidationError as exc:
                    raise refused(f"The remote redirected to a refused location: {exc.message}") from None
                continue
            return _advertised(current, response)
    raise unusable(f"Too many redirects (more than {MAX_REDIRECTS})")


def _get(client: httpx.Client, source: Source, url: str) -> tuple[Source, httpx.Response]:
    """GET ``url`` from the first checked address that accepts a connection.

    Returns the source pinned to that address (git must use the same one) and the response.
    """
    candidates = (source.address, *source.alternatives)
    for index, address in enumerate(candidates):
        pinned = dataclasses.replace(source, address=address, alternatives=())
        try:
            return pinned, _get_from(client, pinned, url)
        except httpx.ConnectError as exc:
            if index == len(candidates) - 1:
                raise unreachable(f"Could not reach {source.host}: {exc}"[:300]) from None
    raise AssertionError("unreachable")


def _get_from(client: httpx.Client, source: Source, url: str) -> httpx.Response:
    """GET ``url`` from ``source.address`` while naming ``source.host`` (Host, SNI, cert)."""
    parts = urlsplit(url)
    address = f"[{source.address}]" if ":" in source.address else source.address
    pinned = parts._replace(netloc=f"{address}:{source.port}").geturl()
    host_header = source.host if parts.port is None else f"{source.host}:{parts.port}"
    if ":" in source.host:
        host_header = f"[{source.host}]" + (f":{parts.port}" if parts.port else "")
    try:
        with client.stream(
            "GET", pinned, headers={"Host": host_header, "User-Agent": USER_AGENT},
            extensions={"sni_hostname": source.host},
        ) as response:
            body = b""
            if response.status_code == 200:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ADVERTISEMENT:
                        raise unusable("The remote's ref advertisement is too large", code=Code.MEMORY_LIMIT)
                    chunks.append(chunk)
                body = b"".join(chunks)
            return httpx.Response(response.status_code, headers=response.headers, content=body)
    except httpx.ConnectError:
        raise
    except httpx.HTTPError as exc:
        raise unreachable(f"Could not reach {source.host}: {type(exc).__name__}: {exc}"[:300]) from None


def _advertised(source: Source, response: httpx.Response) -> Probe:
    status = response.status_code
    if status in (401, 403):
        raise unusable("The remote requires authentication: only public repositories can be imported",
                       code=Code.REMOTE_AUTH_REQUIRED)
    if status == 404:
        raise unusable("Not found: the URL is not a git repository", code=Code.NOT_FOUND)
    if status != 200:
        raise unusable(f"The remote answered HTTP {status}; expected a git repository")
    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != ADVERTISEMENT_TYPE:
        raise unusable("The URL is not a git repository served over smart HTTP")
    try:
        heads, tags, head = parse_advertisement(response.content)
    except ValueError as exc:
        raise unusable(f"The remote's ref advertisement is malformed: {exc}") from None
    return Probe(source, heads, tags, head)


def _pkt_lines(data: bytes) -> list[bytes | None]:
    """pkt-line payloads; ``None`` for a flush packet."""
    out: list[bytes | None] = []
    pos = 0
    while pos < len(data):
        size_text = data[pos:pos + 4]
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("bad pkt-line length") from None
        if size == 0:
            out.append(None)
            pos += 4
            continue
        if size < 4 or pos + size > len(data):
            raise ValueError("truncated pkt-line")
        out.append(data[pos + 4:pos + size])
        pos += size
    return out


def parse_advertisement(data: bytes) -> tuple[dict[str, str], int, str | None]:
    """Branches, tag count and HEAD's branch from a protocol v0/v1 upload-pack advertisement."""
    lines = _pkt_lines(data)
    if not lines or lines[0] is None or not lines[0].startswith(b"# service=git-upload-pack"):
        raise ValueError("no service header")
    heads: dict[str, str] = {}
    tags = 0
    head: str | None = None
    for line in _drop_preamble(lines):
        if line is None:
            break
        text = line.rstrip(b"\n")
        if text.startswith(b"version "):
            continue
        ref, _, caps = text.partition(b"\0")
        sha, _, name_bytes = ref.partition(b" ")
        name = name_bytes.decode("utf-8", errors="replace")
        for cap in caps.split():
            if cap.startswith(b"symref=HEAD:refs/heads/"):
                head = cap[len(b"symref=HEAD:refs/heads/"):].decode("utf-8", errors="replace")
        if len(sha) != 40:
            raise ValueError("bad object id")
        if name.startswith("refs/heads/"):
            heads[name[len("refs/heads/"):]] = sha.decode()
        elif name.startswith("refs/tags/") and not name.endswith("^{}"):
            tags += 1
    return heads, tags, head


def _drop_preamble(lines: Sequence[bytes | None]) -> list[bytes | None]:
    rest = list(lines[1:])
    if rest and rest[0] is None:  # the flush after "# service=..."
        rest = rest[1:]
    return rest
