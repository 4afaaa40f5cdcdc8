"""What a set of NetworkPolicies allows, evaluated the way the Kubernetes network model defines it:
traffic passes when the source's egress policies and the destination's ingress policies both allow
it (a pod no policy selects for a direction is open in that direction). Used by tests/k8s to check
the flows the design needs, and only those, against the rendered policies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Endpoint:
    """A pod (namespace + labels) or, with `ip`, an address outside the cluster."""

    namespace: str = ""
    labels: Labels = field(default_factory=dict)
    ip: str | None = None


def selector_matches(selector: Mapping[str, Any] | None, labels: Labels) -> bool:
    """A LabelSelector; an empty one selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(
    peer: Mapping[str, Any],
    other: Endpoint,
    policy_namespace: str,
    namespace_labels: Mapping[str, Labels],
) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False  # in-cluster pods are reached by selectors here, not by address
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if other.ip is not None:
        return False
    if "namespaceSelector" in peer:
        labels = namespace_labels.get(other.namespace, {})
        if not selector_matches(peer["namespaceSelector"], labels):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selector_matches(peer.get("podSelector"), other.labels)


def _port_matches(ports: Iterable[Mapping[str, Any]] | None, port: int, protocol: str) -> bool:
    ports = list(ports or [])
    if not ports:
        return True
    for rule in ports:
        if rule.get("protocol", "TCP") != protocol:
            continue
        first = rule.get("port")
        last = rule.get("endPort", first)
        if first is None or (isinstance(first, int) and first <= port <= last):
            return True
    return False


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return list(spec["policyTypes"])
    return ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]


def _direction_allows(
    policies: Iterable[Mapping[str, Any]],
    direction: str,
    subject: Endpoint,
    other: Endpoint,
    port: int,
    protocol: str,
    namespace_labels: Mapping[str, Labels],
) -> bool:
    if subject.ip is not None:
        return True  # outside the cluster: no NetworkPolicy applies
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == subject.namespace
        and direction in _policy_types(p)
        and selector_matches(p["spec"].get("podSelector"), subject.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(peer, other, policy["metadata"]["namespace"], namespace_labels)
                for peer in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def allowed(
    source: Endpoint,
    destination: Endpoint,
    port: int,
    policies: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Labels],
    protocol: str = "TCP",
) -> bool:
    """Whether `source` may open a connection to `destination` on `port`."""
    policies = list(policies)
    return _direction_allows(
        policies, "Egress", source, destination, port, protocol, namespace_labels
    ) and _direction_allows(
        policies, "Ingress", destination, source, port, protocol, namespace_labels
    )
