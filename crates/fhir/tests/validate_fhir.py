#!/usr/bin/env python3
"""Validates FHIR resources written by Rapport, with the `fhir.resources` R4B models.

Reads a JSON array of resources on stdin. Each is validated with the R4B model named by
its `resourceType` (fhir.resources 8.x: Pydantic v2 `model_validate`), which checks
element names (unknown ones are refused), JSON types, primitive formats (date, instant,
uri, id…) and cardinalities. fhir.resources does not check codes against value sets, so
the codes Rapport writes in elements with a *required* binding are checked here against
the R4 value sets (below). One line per resource (`ok` or `INVALID` and why); the exit
status is 1 when any resource is invalid.

R4B (4.3.0) is the release fhir.resources ships closest to R4 (4.0.1), which Rapport
speaks; the elements Rapport writes are the same in both.
"""

import json
import sys

from fhir.resources.R4B import get_fhir_model_class

ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown",
    "expired", "forbidden", "suppressed", "processing", "not-supported", "duplicate",
    "multiple-matches", "not-found", "deleted", "too-long", "code-invalid", "extension",
    "too-costly", "business-rule", "conflict", "transient", "lock-error", "no-store",
    "exception", "timeout", "incomplete", "throttled", "informational",
}
CONTACT_POINT_SYSTEM = {"phone", "fax", "email", "pager", "url", "sms", "other"}
CONTACT_POINT_USE = {"home", "work", "temp", "old", "mobile"}

# (resourceType, dotted path) -> the R4 required value set's codes.
REQUIRED = {
    ("Patient", "gender"): {"male", "female", "other", "unknown"},
    ("Patient", "identifier.use"): {"usual", "official", "temp", "secondary", "old"},
    ("Patient", "name.use"): {"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"},
    ("Patient", "telecom.system"): CONTACT_POINT_SYSTEM,
    ("Patient", "telecom.use"): CONTACT_POINT_USE,
    ("Patient", "contact.telecom.system"): CONTACT_POINT_SYSTEM,
    ("Patient", "contact.telecom.use"): CONTACT_POINT_USE,
    ("Patient", "link.type"): {"replaced-by", "replaces", "refer", "seealso"},
    ("Appointment", "status"): {
        "proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow",
        "entered-in-error", "checked-in", "waitlist",
    },
    ("Appointment", "identifier.use"): {"usual", "official", "temp", "secondary", "old"},
    ("Appointment", "participant.status"): {"accepted", "declined", "tentative", "needs-action"},
    ("Appointment", "participant.required"): {"required", "optional", "information-only"},
    ("Communication", "status"): {
        "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
        "entered-in-error", "unknown",
    },
    ("QuestionnaireResponse", "status"): {
        "in-progress", "completed", "amended", "entered-in-error", "stopped",
    },
    ("OperationOutcome", "issue.severity"): {"fatal", "error", "warning", "information"},
    ("OperationOutcome", "issue.code"): ISSUE_TYPES,
    ("Bundle", "type"): {
        "document", "message", "transaction", "transaction-response", "batch",
        "batch-response", "history", "searchset", "collection",
    },
    ("Bundle", "entry.search.mode"): {"match", "include", "outcome"},
    ("CapabilityStatement", "status"): {"draft", "active", "retired", "unknown"},
    ("CapabilityStatement", "kind"): {"instance", "capability", "requirements"},
    ("CapabilityStatement", "rest.mode"): {"client", "server"},
    ("CapabilityStatement", "rest.resource.interaction.code"): {
        "read", "vread", "update", "patch", "delete", "history-instance", "history-type",
        "create", "search-type",
    },
    ("CapabilityStatement", "rest.resource.versioning"): {"no-version", "versioned", "versioned-update"},
    ("CapabilityStatement", "rest.resource.conditionalRead"): {
        "not-supported", "modified-since", "not-match", "full-support",
    },
    ("CapabilityStatement", "rest.resource.conditionalDelete"): {"not-supported", "single", "multiple"},
    ("CapabilityStatement", "rest.resource.searchParam.type"): {
        "number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special",
    },
    ("CapabilityStatement", "fhirVersion"): {"4.0.0", "4.0.1"},
}


def values(node, path):
    """Every value at a dotted path, through lists."""
    if isinstance(node, list):
        for item in node:
            yield from values(item, path)
        return
    if not path:
        yield node
        return
    if isinstance(node, dict):
        head, _, rest = path.partition(".")
        if head in node:
            yield from values(node[head], rest)


def code_errors(resource):
    kind = resource.get("resourceType")
    errors = []
    for (rtype, path), allowed in REQUIRED.items():
        if rtype != kind:
            continue
        for value in values(resource, path):
            if value not in allowed:
                errors.append(f"{kind}.{path}: {value!r} is not in the required value set")
    if kind == "Bundle":
        for entry in resource.get("entry", []):
            inner = entry.get("resource")
            if isinstance(inner, dict):
                errors.extend(code_errors(inner))
    return errors


def main() -> int:
    resources = json.load(sys.stdin)
    if not isinstance(resources, list):
        print("stdin must hold a JSON array of resources", file=sys.stderr)
        return 2
    failures = 0
    for index, resource in enumerate(resources):
        is_obj = isinstance(resource, dict)
        kind = resource.get("resourceType") if is_obj else None
        label = f"[{index}] {kind}/{resource.get('id', '-') if is_obj else '-'}"
        try:
            get_fhir_model_class(str(kind)).model_validate(resource)
            errors = code_errors(resource)
            if errors:
                raise ValueError("\n".join(errors))
        except Exception as err:  # noqa: BLE001 - every failure is reported
            failures += 1
            print(f"{label}: INVALID\n{err}")
        else:
            print(f"{label}: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
