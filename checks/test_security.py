"""Security: runbook 'Regular Security Tasks', 'Key Rotation' and 'Security Incident Response'.

Per host, one `find`, one `stat` of every secret and key file, one read of the passwd file, and one grep over the
tails of the logs; the checks below share them (probes/security.py).
"""

import time

from acgs_verify.check import runbook
from acgs_verify.probes import security
from acgs_verify.words import excerpt, plural


def _stats(hosts, profile, host) -> dict:
    paths = list(dict.fromkeys([*profile.security.secret_files, *(k.path for k in profile.security.keys)]))
    return security.file_stats(hosts, host, paths)


def _security_lines(hosts, profile, thresholds, host) -> list[tuple[str, str]]:
    globs = [profile.paths.security_log] if profile.paths.security_log else [f"{profile.paths.logs}/*.log"]
    n = thresholds.log_tail_lines
    return security.security_lines(hosts, host, globs, n)


@runbook("SEC-01")
def test_no_world_writable_files(app_host, hosts, profile, check):
    """find /home/acgs/ACGS -type f -perm /o+w -ls"""
    root = profile.paths.app_root
    found = security.world_writable(hosts, app_host.host, root)
    if found.timed_out:
        check.fail(f"find under {root} did not finish in {security.FIND_TIMEOUT_SECONDS} s "
                   f"({found.count} world-writable files so far: {', '.join(found.first) or 'none'})")
    if not found.files:
        why = "; ".join(found.unreadable[:3]) or "the tree holds no file"
        check.fail(f"no file under {root} could be examined ({why}): nothing to judge; is paths.app_root right?")
    if found.unreadable:  # the weaker evidence, by name: what could be seen is judged, what could not is said
        check.warn(f"{plural(len(found.unreadable), 'directory', 'directories')} under {root} could not be "
                   f"read: {found.unreadable[0]}")
    if found.first:
        check.evidence("world-writable files", "\n".join(found.first))
    more = f" (first {len(found.first)})" if found.count > len(found.first) else ""
    check.equals(found.count, 0, value={"count": found.count, "first": found.first},
                 shown=f"{found.count} world-writable of {plural(found.files, 'file')} under {root}"
                 + (f"{more}: {', '.join(found.first)}" if found.count else ""))


@runbook("SEC-02")
def test_secret_file_is_private(secret_file, hosts, profile, check):
    """ls -l config/production.env  (not readable by group or others; right owner)"""
    st = _stats(hosts, profile, secret_file.host).get(secret_file.path)
    if st is None:
        check.fail(f"cannot stat {secret_file.path}: it does not exist, or a directory on its path is not "
                   "searchable by this user")
    if st.dangling:
        check.fail(f"{secret_file.path} is a symlink to {st.target}, which does not exist (a dangling link)")
    limit, owner = int(profile.security.secret_max_mode, 8), profile.security.secret_owner
    problems = [f"mode {st.mode:04o} allows more than {limit:04o}"] if st.mode & ~limit else []
    problems += [f"owner {st.owner}, not {owner}"] if owner and st.owner != owner else []
    # a link's own mode is always 0777: the profile named the link, so the file it reaches is the one judged
    via = f" (of the file its symlink reaches: -> {st.target})" if st.target else ""
    check.that(not problems, measured=f"mode {st.mode:04o}, owner {st.owner}{via}", why="; ".join(problems) or None,
               expected=f"mode within {limit:04o}" + (f", owner {owner}" if owner else ""))


@runbook("SEC-03")
def test_failed_logins_below_limit(node, hosts, profile, thresholds, check):
    """grep -i "failed login\\|unauthorized" /var/log/acgs/*.log"""
    lines = [x for x in _security_lines(hosts, profile, thresholds, node.host) if security.FAILED_LOGIN.search(x[1])]
    limit = thresholds.failed_logins_max
    if lines:
        check.evidence("failed logins", "\n".join(f"{log}: {text}" for log, text in lines[-50:]))
    check.at_most(len(lines), limit, shown=f"{len(lines)} failed-login/unauthorized lines in the last "
                  f"{thresholds.log_tail_lines} lines of each log")


@runbook("SEC-04")
def test_accounts_match_allow_list(node, hosts, profile, check):
    """cut -d: -f1 /etc/passwd | sort"""
    allowed = profile.security.allowed_users
    if not allowed:
        check.skip("the profile lists no allowed_users to compare the accounts with")
    passwd = profile.paths.passwd
    names = security.accounts(hosts, node.host, passwd)
    unknown = sorted(set(names) - set(allowed))
    check.that(not unknown, measured=f"{plural(len(names), 'account')} in {passwd}; not on the allow-list: "
               f"{', '.join(unknown) or 'none'}", expected="every account on security.allowed_users", value=unknown)


@runbook("SEC-05")
def test_key_rotated_in_time(key, hosts, profile, thresholds, check):
    """python scripts/rotate_application_keys.py  (monthly; database credentials quarterly)"""
    k = key.key
    limit = thresholds.app_key_max_age_days if k.kind == "app" else thresholds.db_credential_max_age_days
    if k.rotation_record:
        text = security.small_file(hosts, key.host, k.rotation_record)
        rotated, source = security.rotation_time(text).timestamp(), f"rotation record {k.rotation_record}"
    else:
        st = _stats(hosts, profile, key.host).get(k.path)
        if st is None or st.dangling:
            check.fail(f"key file {k.path} does not exist" + (f" (a symlink to {st.target})" if st else ""))
        rotated, source = st.mtime, f"mtime of {k.path}"
    age = (time.time() - rotated) / 86400
    check.at_most(age, limit, "days", shown=f"{k.kind} key last rotated {age:.1f} days ago ({source})",
                  value=round(age, 2))


@runbook("SEC-06")
def test_no_breach_indicators(node, hosts, profile, thresholds, check):
    """grep -i "failed\\|unauthorized\\|breach" /var/log/acgs/*.log"""
    lines = [x for x in _security_lines(hosts, profile, thresholds, node.host) if security.BREACH.search(x[1])]
    if lines:
        check.evidence("breach indicators", "\n".join(f"{log}: {text}" for log, text in lines[-50:]))
    latest = f", latest: {lines[-1][0]}: {excerpt(lines[-1][1], 200)}" if lines else ""
    check.equals(len(lines), 0, shown=f"{plural(len(lines), 'line')} naming a breach or intrusion{latest}")
