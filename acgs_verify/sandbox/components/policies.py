"""The sandbox's constitutional policy set under the application tree, and its faults.

DIR/home/acgs/ACGS/config/policies holds YAML, JSON and Rego policies as ACGS ships them, each naming the
constitutional hash. `policy-invalid` breaks the YAML syntax of decision_rules.yaml; `policy-wrong-hash` gives
data_access.rego another hash. Heal writes the file as `up` did. `policy-notes` is a layout, not a fault: the
notes a real deployment keeps beside its policies (CLAUDE.md, README.md), which CC-03 must list as ignored and
not fail; heal removes them. The ssh host ops-1 has a policy set of its own, DIR/hosts/ops-1/home/acgs/ACGS/config/
policies, and each fault has its variant there (`policy-invalid:ops-1`), which CC-03 catches over ssh.
State slice: {"faults": [...]}.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from acgs_verify.sandbox.components.base import Component, Context, atomic_write
from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH, OPS_HOST, OPS_TREE, OTHER_HASH, POLICY_DIR

INVALID_FILE = "decision_rules.yaml"
WRONG_HASH_FILE = "data_access.rego"

H = CONSTITUTIONAL_HASH
POLICIES: dict[str, str] = {
    "constitutional_principles.yaml": f"""\
# Constitutional principles every governance decision is evaluated against
apiVersion: acgs/v1
kind: ConstitutionalPrinciples
metadata:
  name: core-principles
  version: 2.3.0
  constitutional_hash: {H}
principles:
  - id: P-001
    name: human-oversight
    description: Decisions with material impact on people require a human reviewer.
    weight: 1.0
    enforcement: mandatory
  - id: P-002
    name: transparency
    description: Every decision records its inputs, the policies applied and the outcome.
    weight: 0.9
    enforcement: mandatory
  - id: P-003
    name: proportionality
    description: Data access is limited to what the stated purpose needs.
    weight: 0.8
    enforcement: advisory
""",
    INVALID_FILE: f"""\
name: governance-rules
version: 1.8.2
constitutional_hash: {H}
scope: [policy-governance, governance-synthesis]
rules:
  - id: GR-010
    when: {{decision: deny, impact: high}}
    require: [human_review, audit_event]
  - id: GR-020
    when: {{principle: transparency}}
    require: [explanation]
  - id: GR-030
    when: {{compliance_score_below: 0.95}}
    action: escalate
    notify: governance-oncall
""",
    WRONG_HASH_FILE: f"""\
# Who may read what: evaluated by policy-governance on every data request
package acgs.data_access

import future.keywords.if
import future.keywords.in

constitutional_hash := "{H}"

default allow := false

privileged_roles := {{"admin", "auditor"}}

allow if {{
    input.user.role in privileged_roles
    input.action == "read"
}}

allow if {{
    input.user.id == input.resource.owner
    input.action in {{"read", "update"}}
}}

deny[msg] {{
    not input.user
    msg := sprintf("request %v has no user", [input.request_id])
}}
""",
    "proposal_limits.rego": f"""\
# Constraints on policies that governance-synthesis proposes
package acgs.synthesis

import future.keywords.if

constitutional_hash := "{H}"

max_rules := 200

violation[msg] {{
    count(input.policy.rules) > max_rules
    msg := sprintf("policy %v has %d rules (max %d)", [input.policy.name, count(input.policy.rules), max_rules])
}}

violation[msg] {{
    input.policy.constitutional_hash != constitutional_hash
    msg := "policy was synthesised under another constitution"
}}
""",
    "model_evaluation.json": f"""\
{{
  "name": "model-evaluation",
  "version": "3.1.0",
  "constitutional_hash": "{H}",
  "thresholds": {{"fairness_min": 0.92, "robustness_min": 0.9, "explainability_min": 0.85}},
  "rules": [
    {{"id": "ME-1", "metric": "fairness", "op": ">=", "value": 0.92, "on_fail": "block"}},
    {{"id": "ME-2", "metric": "robustness", "op": ">=", "value": 0.9, "on_fail": "block"}},
    {{"id": "ME-3", "metric": "explainability", "op": ">=", "value": 0.85, "on_fail": "warn"}}
  ]
}}
""",
    "audit_requirements.json": f"""\
{{
  "name": "audit-requirements",
  "metadata": {{"constitutional_hash": "{H}", "owner": "compliance"}},
  "retention_days": 90,
  "rules": [
    {{"event_type": "governance_decision", "fields": ["decision", "compliant", "score"], "hash_chain": true}},
    {{"event_type": "policy_update", "fields": ["policy_id", "version"], "hash_chain": true}}
  ]
}}
""",
}

# seen beside the policies of a real deployment: notes for people and tools, not policies
NOTES: dict[str, str] = {
    "CLAUDE.md": "# Policies\n\nConstitutional policies for ACGS. Every policy names constitutional_hash "
                 f"{H}.\nEdit the Rego files, then run `opa test .` before committing.\n",
    "README.md": "# config/policies\n\n- `*.rego`: evaluated by policy-governance through OPA\n"
                 "- `*.yaml`, `*.json`: loaded by constitutional-ai at start-up\n",
}


class Policies(Component):
    name = "policies"
    fault_names = ("policy-invalid", "policy-wrong-hash", "policy-notes")
    fault_help = {
        "policy-invalid": "decision_rules.yaml no longer parses (CC-03)",
        "policy-wrong-hash": "data_access.rego names another hash (CC-03)",
        "policy-notes": "a layout, not a fault: notes beside the policies that CC-03 lists as ignored",
    }

    def fault_targets(self, fault: str) -> list[str]:
        return ["", OPS_HOST]

    def up(self, ctx: Context) -> None:
        self.clear_faults(ctx)
        # the directory is this component's alone: a file left by an earlier sandbox in the same dir would be
        # checked by CC-03 as if it were part of the shipped set
        for host in ("", OPS_HOST):
            shutil.rmtree(self._dir(ctx, host), ignore_errors=True)
            for name in POLICIES:
                self._write(ctx, name, POLICIES[name], host)

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        return [self.row(ctx, "policies", f"{len(POLICIES)} files in {self._dir(ctx)}")]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        return {"paths": {"policies": str(self._dir(ctx))}, "policies": {"format": "auto"}}

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        if fault == "policy-notes":
            for name, text in NOTES.items():
                self._write(ctx, name, text, target)
        elif fault == "policy-invalid":  # an unclosed flow mapping, as a hand edit leaves it
            self._write(ctx, INVALID_FILE, POLICIES[INVALID_FILE].replace("impact: high}", "impact: high"), target)
        else:
            self._write(ctx, WRONG_HASH_FILE, POLICIES[WRONG_HASH_FILE].replace(H, OTHER_HASH), target)

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        if fault == "policy-notes":
            for name in NOTES:
                (self._dir(ctx, target) / name).unlink(missing_ok=True)
        else:
            name = INVALID_FILE if fault == "policy-invalid" else WRONG_HASH_FILE
            self._write(ctx, name, POLICIES[name], target)

    def _dir(self, ctx: Context, host: str = "") -> Path:
        """app-1's policy folder (host ""), or ops-1's own."""
        return ctx.dir / (f"{OPS_TREE}/{POLICY_DIR}" if host else POLICY_DIR)

    def _write(self, ctx: Context, name: str, text: str, host: str = "") -> None:
        path = self._dir(ctx, host) / name
        atomic_write(path, text)
        os.chmod(path, 0o644)
