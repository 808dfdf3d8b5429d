"""The pipeline principal's ACLs, derived from the topic catalog, applied and checked for drift.

The catalog (include/config/topics.yaml) names the principal of the kafka_default connection and
the prefixes of its consumer groups and transactional ids (``access``). From it the principal may:

* on every declared topic: Read, Write, Describe, DescribeConfigs (a literal ACL per topic) -
  not Create, Delete, Alter or AlterConfigs: provisioning does those as the admin principal;
* on each group prefix: Read (which includes Describe);
* on each transactional-id prefix: Write and Describe (Write on a topic implies IdempotentWrite).

Everything else is refused, as the cluster's authorizer allows nothing no ACL allows. ACLs of the
principal that the catalog does not derive are drift: reported, and removed when asked to fix
drift. A cluster without an authorizer (KAFKA_AUTH=none) has no ACLs: the plan says so and is empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient,
                                   ConfigResource, ResourcePatternType, ResourceType)

from include.kafka_admin.catalog import TopicCatalog

TOPIC_OPERATIONS = (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)
GROUP_OPERATIONS = (AclOperation.READ,)
TRANSACTIONAL_ID_OPERATIONS = (AclOperation.WRITE, AclOperation.DESCRIBE)


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW entry for the principal, from any host."""

    resource: str  # topic, group, transactional_id
    name: str
    pattern: str  # literal, prefixed
    operation: str  # READ, WRITE ...

    def binding(self, principal: str) -> AclBinding:
        return AclBinding(ResourceType[self.resource.upper()], self.name, ResourcePatternType[self.pattern.upper()],
                          f"User:{principal}", "*", AclOperation[self.operation], AclPermissionType.ALLOW)

    @classmethod
    def of(cls, binding: AclBinding) -> Acl:
        return cls(binding.restype.name.lower(), binding.name, binding.resource_pattern_type.name.lower(),
                   binding.operation.name)

    def __str__(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"{self.operation} on {self.resource} {self.name}{star}"


@dataclass(frozen=True)
class AclOutcome:
    acl: str
    action: str  # created, unchanged, would-create, removed, extra (drift left in place), skipped

    def as_dict(self) -> dict:
        return {"acl": self.acl, "action": self.action}


def declared_acls(catalog: TopicCatalog) -> set[Acl]:
    """The ACLs the catalog derives for its principal (see the module doc)."""
    acls = {Acl("topic", name, "literal", op.name) for name in catalog.names() for op in TOPIC_OPERATIONS}
    acls |= {Acl("group", prefix, "prefixed", op.name)
             for prefix in catalog.access.group_prefixes for op in GROUP_OPERATIONS}
    acls |= {Acl("transactional_id", prefix, "prefixed", op.name)
             for prefix in catalog.access.transactional_id_prefixes for op in TRANSACTIONAL_ID_OPERATIONS}
    return acls


def has_authorizer(admin: AdminClient, timeout: float = 30.0) -> bool:
    """Whether the brokers authorize requests (``authorizer.class.name`` is set in a broker's config).

    Asked of the config, as a broker without one answers DescribeAcls with an empty list and
    refuses only CreateAcls.
    """
    broker = min(admin.list_topics(timeout=timeout).brokers)
    resource = ConfigResource(ResourceType.BROKER, str(broker))
    entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout)
    entry = entries.get("authorizer.class.name")
    return bool(entry is not None and entry.value)


def existing_acls(admin: AdminClient, principal: str, timeout: float = 30.0) -> set[Acl] | None:
    """The principal's ALLOW ACLs on topics, groups and transactional ids; None without an authorizer."""
    if not has_authorizer(admin, timeout):
        return None
    wanted = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, f"User:{principal}", None,
                              AclOperation.ANY, AclPermissionType.ANY)
    return {Acl.of(b) for b in admin.describe_acls(wanted, request_timeout=timeout).result(timeout)}


@dataclass(frozen=True)
class AclPlan:
    principal: str
    authorizer: bool
    missing: frozenset[Acl] = frozenset()
    present: frozenset[Acl] = frozenset()
    extra: frozenset[Acl] = frozenset()  # the principal's ACLs the catalog does not derive: drift

    @property
    def in_sync(self) -> bool:
        return not (self.missing or self.extra)


def plan_acls(admin: AdminClient, catalog: TopicCatalog, timeout: float = 30.0) -> AclPlan:
    principal = catalog.access.principal
    existing = existing_acls(admin, principal, timeout)
    if existing is None:
        return AclPlan(principal, authorizer=False)
    declared = declared_acls(catalog)
    return AclPlan(principal, True, frozenset(declared - existing), frozenset(declared & existing),
                   frozenset(existing - declared))


def apply_acls(admin: AdminClient, plan: AclPlan, *, fix_drift: bool, dry_run: bool,
               timeout: float = 30.0) -> list[AclOutcome]:
    """Create the missing ACLs (and remove the extra ones when ``fix_drift``); a row per ACL."""
    if not plan.authorizer:
        return [AclOutcome(f"User:{plan.principal}", "skipped: the cluster has no authorizer (KAFKA_AUTH=none)")]
    rows = [AclOutcome(str(acl), "unchanged") for acl in sorted(plan.present)]
    missing, extra = sorted(plan.missing), sorted(plan.extra)
    if dry_run:
        return (rows + [AclOutcome(str(a), "would-create") for a in missing]
                + [AclOutcome(str(a), "would-remove" if fix_drift else "extra") for a in extra])
    if missing:
        _results(admin.create_acls([a.binding(plan.principal) for a in missing], request_timeout=timeout), timeout)
    rows += [AclOutcome(str(a), "created") for a in missing]
    if extra and fix_drift:
        _results(admin.delete_acls([_exact_filter(a.binding(plan.principal)) for a in extra],
                                   request_timeout=timeout), timeout)
    rows += [AclOutcome(str(a), "removed" if fix_drift else "extra") for a in extra]
    return rows


def drift_text(plan: AclPlan) -> str:
    """One sentence naming what differs, for verification and the health check."""
    parts = []
    if plan.missing:
        parts.append(f"missing {', '.join(map(str, sorted(plan.missing)))}")
    if plan.extra:
        parts.append(f"not declared {', '.join(map(str, sorted(plan.extra)))}")
    return f"the ACLs of User:{plan.principal} differ from the catalog's: {'; '.join(parts)}"


def _exact_filter(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type, binding.principal,
                            binding.host, binding.operation, binding.permission_type)


def _results(futures: Iterable, timeout: float) -> None:
    for future in (futures.values() if isinstance(futures, dict) else futures):
        future.result(timeout)
