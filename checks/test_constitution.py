"""Constitutional compliance: runbook 'Constitutional Compliance Failure'."""


from acgs_verify.check import runbook
from acgs_verify.probes.compliance import compliance_rates
from acgs_verify.probes.logs import hash_mentions, lines_with
from acgs_verify.probes.postgres import audit_chain
from acgs_verify.words import plural

STEPS_SHOWN = 20  # CC-05's chains shown one step each


@runbook("CC-01")
def test_expected_hash_in_recent_log_lines(service_log, logs, profile, thresholds, check):
    """grep "cdd01ef066bc6cf2" /var/log/acgs/*.log | tail -10"""
    n = thresholds.log_tail_lines
    lines = logs.lines(service_log.host, service_log.log, n)  # ProbeError when there is no line
    found = lines_with(lines, profile.constitutional_hash)
    if found:
        check.evidence("latest line with the hash", found[-1])
    check.that(bool(found),
               measured=f"{len(found)} of the last {plural(len(lines), 'line')} name {profile.constitutional_hash}",
               expected=f"the hash in the last {n} lines of {service_log.log}")


@runbook("CC-02")
def test_no_log_line_names_another_hash(service_log, logs, profile, thresholds, check):
    """grep -i "constitutional hash" /var/log/acgs/*.log | grep -v cdd01ef066bc6cf2"""
    # 0 mismatches means something only over lines read: an empty log or window fails (ProbeError)
    lines = logs.lines(service_log.host, service_log.log, thresholds.log_tail_lines)
    others = {h: n for h, n in hash_mentions(lines).items() if h != profile.constitutional_hash}
    if others:
        bad = [line for line in lines if any(h in line.lower() for h in others)]
        check.evidence("lines naming another hash", "\n".join(bad[-20:]))
    shown = ", ".join(f"{h} ({n} lines)" for h, n in sorted(others.items())) or "none"
    check.that(not others, measured=f"other hashes named in the last {plural(len(lines), 'line')} of "
                                    f"{service_log.log} on {service_log.host.name}: {shown}",
               expected=f"every named hash is {profile.constitutional_hash}", value=sorted(others))


@runbook("CC-04")
def test_compliance_rate_of_recent_decisions(environment, pg, http, thresholds, check):
    """python scripts/compliance_report.py  (compliance rate >= 99 %; below 95 % is an incident)"""
    rates = compliance_rates(environment.profile, pg, http)
    if not rates:
        check.skip("no source of decisions: no audit table with recent decisions and no compliance metric named")
    check.evidence("compliance rate by source", rates)
    least, target = thresholds.compliance_rate_percent_min, thresholds.compliance_rate_percent_target
    worst = min(rates.values())
    shown = ", ".join(f"{source} {rate:.2f} %" for source, rate in rates.items())
    check.at_least(worst, least, f"% (target {target:g} %)", shown=shown, value=worst)
    if worst < target:
        check.warn(f"compliance {worst:.2f} % is below the {target:g} % target ({shown})")


@runbook("CC-05", applies=lambda t: bool(t.audit_table))
def test_audit_hash_chain_unbroken(database, pg, profile, check):
    """python scripts/security_audit.py  (each row's prev_hash is the current_hash of the row before it in its chain)"""
    chain = audit_chain(pg.get(database), database.audit_table, profile.constitutional_hash, database.audit_chain_rows)
    first, by = chain["first_break"], chain["chains"]["by"]
    _chain_steps(check, chain, by)
    if first:
        check.evidence("first broken link", first)
    where = f"row id {first['id']} (chain {first['chain']})" if first and by else f"row id {first and first['id']}"
    broken = "" if not first else (f"; first broken link: {where} has prev_hash {str(first['prev_hash'])[:16]}..., "
        + ("which names no row" if first["kind"] == "names no row" else f"as do rows {first['ids'][:-1]}: a fork"))
    wrong = chain["first_wrong_hash"]
    other = f"; first row with another hash: id {wrong['id']} ({wrong['constitutional_hash']})" if wrong else ""
    chains = f"{plural(chain['chains']['count'], 'chain')} by {by}" if by else "1 chain"
    check.that(not chain["breaks"] and not chain["wrong_hash"], value=chain["breaks"] + chain["wrong_hash"],
               measured=f"{plural(chain['breaks'], 'broken link')}, {plural(chain['wrong_hash'], 'row')} naming "
                        f"another hash in {chains} over the newest {plural(chain['rows'], 'row')} of "
                        f"{database.audit_table}{broken}{other}",
               expected=f"0 breaks, every row carrying {profile.constitutional_hash}")


def _chain_steps(check, chain, by) -> None:
    # one step per chain (tenant), those with a break or another hash first; the rest of a long list in one line
    per = sorted(chain.get("per_chain", []), key=lambda c: (not (c["breaks"] or c["wrong_hash"]), str(c["chain"])))
    for c in per[:STEPS_SHOWN]:
        bad = c["breaks"] or c["wrong_hash"]
        check.stage(f"chain {by}={c['chain']}" if by else "chain", "failed" if bad else "passed",
                    f"{plural(c['rows'], 'row')}, {plural(c['breaks'], 'broken link')}, "
                    f"{plural(c['wrong_hash'], 'row')} naming another hash")
    more = chain["chains"]["count"] - len(per[:STEPS_SHOWN])
    if more > 0:  # the chains not shown carry what the shown ones do not
        left = chain["breaks"] + chain["wrong_hash"] - sum(c["breaks"] + c["wrong_hash"] for c in per[:STEPS_SHOWN])
        check.stage(plural(more, "more chain"), "failed" if left else "passed",
                    f"{plural(left, 'broken link or row', 'broken links or rows')} with another hash among them")


@runbook("CC-06", applies=lambda t: bool(t.hash_key))
def test_cache_holds_expected_hash(cache, caches, profile, check):
    """redis-cli get acgs:constitutional_hash"""
    key = cache.hash_key
    got = caches.get(cache).get(key)
    check.equals(got, profile.constitutional_hash, what=key, shown=f"{key} = {got!r}")


@runbook("CC-03")
def test_policy_file_validates(policies, hosts, profile, check):
    """python scripts/validate_constitutional_policies.py (Constitutional Compliance Failure)

    Evidence for a pass: every policy file on the host parses and names the expected hash. Only policy files are
    validated (profile policies.include/exclude); the rest are listed once, as ignored. No policy file fails."""
    from acgs_verify.probes.hostfiles import host_files
    from acgs_verify.probes.policies import check_policies, describe_ignored, scan_policies

    if policies.root is None:
        check.skip("the profile sets paths.policies: null: this site keeps no policy files")
    files, include = host_files(hosts, policies.host), profile.policies.include_globs
    scan = scan_policies(policies.root, include, profile.policies.exclude, files)
    if scan.ignored:
        check.evidence("not policy files (ignored)", "\n".join(scan.ignored))
        check.warn(describe_ignored(scan.root, scan.ignored))
    fmt = "YAML, JSON or Rego by extension" if profile.policies.format == "auto" else profile.policies.format
    if not scan.files:
        check.fail(measured=f"no policy file under {scan.root}: {scan.nothing_found(include)}",
                   expected=f"at least one policy file ({', '.join(include)})")
    found = check_policies(scan, profile.policies.format, profile.policies.hash_field, files)
    bad = {f: c for f, c in found.items() if c.problem is not None or c.hash != profile.constitutional_hash}
    said = {f: c.problem or f"{c.format}: {c.detail}; {profile.policies.hash_field} {c.hash}" for f, c in found.items()}
    check.evidence("policy files", [f"{f}: {said[f]}" for f in found])
    check.that(not bad, value=sorted(bad),
               measured="; ".join(f"{f}: {found[f].format}: {said[f]}" for f in bad) if bad else
               f"{plural(len(found), 'policy file')} under {scan.root} validate ({', '.join(found)})",
               expected=f"every policy file parses ({fmt}) and names constitutional hash {profile.constitutional_hash}")
