"""Which callback URLs a webhook may go to: the operator's CALIB_WEBHOOK_ALLOWED_HOSTS, read as rules.
Pure (urllib, ipaddress): the contract checks URLs with it at submission, the worker checks URLs and
resolved addresses with it at delivery, and the OpenAPI document spells it into a pattern.

An entry is `[http://]HOST[:PORT]`, comma-separated:
- HOST is a name (`hooks.example.com`), a suffix pattern (`*.example.com`), `*` (any name, and any
  public address written as a literal), or an address or network (`127.0.0.1`, `10.0.0.0/8`,
  `[::1]`, `[fd00::]/8`). A URL whose host is an address literal is accepted only inside a listed
  network, or with `*` when the address is public: naming one host never admits literals.
- PORT is a number, or `*` for any; without it only the scheme's default port (443, or 80 for http).
- `http://` before an entry also allows plain http for it; otherwise only https is accepted.

Addresses that carry an IPv4 address inside an IPv6 one (IPv4-mapped `::ffff:a.b.c.d`,
IPv4-compatible `::a.b.c.d`, 6to4 `2002::/16`, NAT64 `64:ff9b::/96`) are judged by the IPv4 address
they carry: `64:ff9b::a9fe:a9fe` is 169.254.169.254, and is refused as that.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ANY_PORT = 0
DEFAULT_PORTS = {"https": 443, "http": 80}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


@dataclass(frozen=True)
class Rule:
    """One entry. Exactly one of name, suffix, any_name, network says which hosts it covers."""

    name: str | None = None
    suffix: str | None = None  # ".example.com" for "*.example.com"
    any_name: bool = False
    network: Network | None = None
    port: int | None = None  # None: the scheme's default port; ANY_PORT: any
    http: bool = False

    def port_allows(self, scheme: str, port: int) -> bool:
        if self.port == ANY_PORT:
            return True
        return port == (DEFAULT_PORTS[scheme] if self.port is None else self.port)

    def scheme_allows(self, scheme: str) -> bool:
        return scheme == "https" or (scheme == "http" and self.http)

    def covers(self, host: str) -> bool:
        """Whether this rule names the URL's host (a name, or an address literal)."""
        literal = address_of(host)
        if literal is not None:
            inner = carried(literal)
            if self.network is not None:
                return inner in self.network if inner.version == self.network.version else literal in self.network
            return self.any_name and public(literal)
        if self.any_name:
            return True
        if self.name is not None:
            return host == self.name
        return self.suffix is not None and host.endswith(self.suffix)


def carried(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def public(address: Address) -> bool:
    """A globally routable unicast address, judged by the IPv4 address it carries if any."""
    inner = carried(address)
    return inner.is_global and not inner.is_multicast and address.is_global and not address.is_multicast


def address_of(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _rule(entry: str) -> Rule:
    http = entry.startswith("http://")
    entry = entry.removeprefix("http://").removeprefix("https://")
    host, port = entry, None
    if entry.startswith("["):  # [v6] or [v6]/len, then maybe :port
        close = entry.index("]")
        rest = entry[close + 1 :]
        prefix = ""
        if rest.startswith("/"):
            prefix, sep, rest = rest.partition(":")
            rest = sep + rest
        host, port = entry[1:close] + prefix, (rest[1:] if rest.startswith(":") else None)
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    number = None if port is None else (ANY_PORT if port == "*" else int(port))
    if number is not None and not 0 < number < 65536 and number != ANY_PORT:
        raise ValueError(f"port {port} of {entry!r}")
    if host == "*":
        return Rule(any_name=True, port=number, http=http)
    if host.startswith("*."):
        return Rule(suffix=host[1:], port=number, http=http)
    try:
        return Rule(network=ipaddress.ip_network(host, strict=False), port=number, http=http)
    except ValueError:
        return Rule(name=host.rstrip("."), port=number, http=http)


@dataclass(frozen=True)
class AllowedHosts:
    rules: tuple[Rule, ...]

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        entries = (part.strip().lower() for part in text.split(","))
        return cls(tuple(_rule(entry) for entry in entries if entry))

    def problem(self, scheme: str, host: str, port: int) -> str | None:
        """Why a URL with this scheme, host and port is refused, or None."""
        host = host.lower().rstrip(".")
        covering = [rule for rule in self.rules if rule.covers(host)]
        if not covering:
            literal = address_of(host) is not None
            return (
                f"host {host!r} is an address not inside any network this service's operator allows for webhooks"
                if literal
                else f"host {host!r} is not among the hosts this service's operator allows for webhooks"
            )
        if not any(rule.scheme_allows(scheme) for rule in covering):
            return f"plain http is not allowed for {host!r}; use https"
        if not any(rule.scheme_allows(scheme) and rule.port_allows(scheme, port) for rule in covering):
            return f"port {port} is not allowed for {host!r}"
        return None

    def address(self, address: Address) -> bool:
        """Whether a delivery may connect to this resolved address: inside a listed network, or
        public when the operator allowed names (their public addresses are what was allowed)."""
        inner = carried(address)
        for rule in self.rules:
            if rule.network is not None and (inner in rule.network or address in rule.network):
                return True
        names = any(rule.network is None for rule in self.rules)
        return names and public(address)


def url_problem(url: str, allowed: AllowedHosts) -> str | None:
    """Why this callback URL is refused, or None: http(s), a host, port and scheme the operator
    allows, no credentials. The same check runs at submission and before every delivery."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a URL"
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return "an http:// or https:// URL with a host is needed"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted; verify the webhook-signature header instead"
    return allowed.problem(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])
