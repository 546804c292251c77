#!/usr/bin/env bash
# The runbook typed by hand: the runbook's own commands for every check acgs-verify runs, one after another,
# in the runbook's order. benchmarks/bench.py exports what the profile says (ports, paths, passwords, hosts)
# as ACGS_* variables and times this script against `acgs-verify run` on the same sandbox.
#
# Honest in both directions: the same samples (ACGS_SAMPLES health GETs per service, ACGS_REDIS_SAMPLES PINGs,
# an ACGS_CPU_SAMPLE-second CPU window per host), the same log tails (ACGS_TAIL lines), the same queries; where
# the runbook's tool is slower than needed, the faster equivalent is used (one `curl -i` serves SVC-01/02/08;
# latency samples ride one keep-alive curl; `ps`/`ss` run once per host and are grepped per service), so the
# script's time is a lower bound for a person typing the runbook. One verdict line per check goes to stdout;
# the last line counts them.
set -u
export LC_ALL=C
HASH=$ACGS_HASH
N=$ACGS_SAMPLES
TAIL=$ACGS_TAIL
PASS=0
FAIL=0

SKIP=0
verdict() {  # verdict ID TARGET OK(0/1/S) WHAT; S: not judged (too little history), as acgs-verify's skips
  if [ "$3" = S ]; then SKIP=$((SKIP + 1)); echo "SKIP $1 $2 $4"; return; fi
  if [ "$3" = 0 ]; then PASS=$((PASS + 1)); echo "PASS $1 $2 $4"; else FAIL=$((FAIL + 1)); echo "FAIL $1 $2 $4"; fi
}
ok() { "$@" >/dev/null 2>&1 && echo 0 || echo 1; }
lines() { printf '%s\n' "$1" | grep -v '^$' || true; }

# ------------------------------------------------------------------ per host (locally, or in one ssh session)
# Everything the runbook types on a host: printed as "ID|target|ok|what" lines; the ACGS_* records themselves split on \x1f (patterns hold "|"), judged here.
host_checks() {
  local name=$1 roles=$2 mounts=$3
  local ps_out ss_out
  ps_out=$(ps -ww -eo pid=,args=)                    # ps aux | grep uvicorn
  ss_out=$(ss -Htln)                                  # netstat -tlnp | grep :8016
  local ssp_out psm_out
  ssp_out=$(ss -Htlnp 2>/dev/null)                    # netstat -tlnp: which pid owns each port (SVC-11)
  psm_out=$(ps -eo pid=,ppid=,rss=,pmem=)             # ps aux's %MEM and RSS columns (SVC-11)
  if [[ ",$roles," == *",app,"* ]]; then
    while IFS=$'\x1f' read -r svc role port scheme health ready live metrics log process unit metric; do
      [ -n "$svc" ] && [[ ",$roles," == *",$role,"* ]] || continue
      echo "SVC-03|$svc@$name|$(printf '%s\n' "$ps_out" | grep -v 'ps -ww' | grep -Eq -- "$process" && echo 0 || echo 1)|ps"
      echo "SVC-04|$svc@$name|$(printf '%s\n' "$ss_out" | awk '{print $4}' | grep -Eq ":$port\$" && echo 0 || echo 1)|ss"
      # SVC-11: ps aux | grep uvicorn | awk '{print $2, $4, $11}' | sort -k2 -nr  (the port's owners and their children)
      local owners mem
      owners=$(printf '%s\n' "$ssp_out" | awk -v p=":$port" '$4 ~ p"$"' | grep -oE 'pid=[0-9]+' | cut -d= -f2 | sort -u | tr '\n' ' ')
      mem=$(printf '%s\n' "$psm_out" | awk -v roots="$owners" '
          BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
          { pid[NR] = $1; ppid[NR] = $2; rss[NR] = $3; pm[NR] = $4 }
          END { grew = 1; while (grew) { grew = 0; for (i = 1; i <= NR; i++) if (!(pid[i] in keep) && (ppid[i] in keep)) { keep[pid[i]] = 1; grew = 1 } }
                for (i = 1; i <= NR; i++) if (pid[i] in keep) { s += rss[i]; m += pm[i] }; printf "%d %.1f", s / 1024, m }')
      echo "SVC-11|$svc@$name|$([ -n "$owners" ] && awk -v r="${mem% *}" -v m="${mem#* }" -v R="$ACGS_SVC_RSS_MAX" -v M="$ACGS_SVC_PMEM_MAX" 'BEGIN{print (r < R && m < M) ? 0 : 1}' || echo 1)|rss ${mem% *} MB ${mem#* }%"
      if [ -n "$unit" ] && [ -d /run/systemd/system ]; then                 # systemctl status acgs-auth-service
        echo "SVC-05|$svc@$name|$(systemctl is-active --quiet "$unit" && echo 0 || echo 1)|systemctl"
      fi
      if [ -n "$log" ]; then
        local tail_out
        tail_out=$(tail -n "$TAIL" -- "$log")        # tail -f /var/log/acgs/auth_service.log
        # SVC-07: 5xx among request lines (plain `status=500` or JSON `"status": 500`), health/metrics left out
        local req err
        req=$(printf '%s\n' "$tail_out" | grep -E 'status[=":]+ ?[0-9]{3}' | grep -vcE 'path[=":]+ ?"?/(health|metrics)')
        err=$(printf '%s\n' "$tail_out" | grep -E 'status[=":]+ ?5[0-9]{2}' | grep -vcE 'path[=":]+ ?"?/(health|metrics)')
        echo "SVC-07|$svc@$name|$(awk -v e="$err" -v r="$req" 'BEGIN{print (r == 0 || 100*e/r < 0.1) ? 0 : 1}')|$err of $req"
        # grep "cdd01ef066bc6cf2" /var/log/acgs/*.log | tail -10
        echo "CC-01|$svc@$name|$(printf '%s\n' "$tail_out" | grep -q -- "$HASH" && echo 0 || echo 1)|grep hash"
        # grep -i "constitutional hash" ... | grep -v cdd01ef066bc6cf2
        echo "CC-02|$svc@$name|$(printf '%s\n' "$tail_out" | grep -iE 'constitutional[ _-]?hash' \
          | grep -oiE '[0-9a-f]{16}' | grep -qv -- "$HASH" && echo 1 || echo 0)|grep other hashes"
      fi
    done <<< "$ACGS_SERVICES"
  fi
  local db dbhost pattern
  while IFS=$'\x1f' read -r db dbhost pattern; do         # sudo systemctl status postgresql (no systemd: its process)
    [ -n "$db" ] && [ "$dbhost" = "$name" ] || continue
    echo "DB-02|$db@$name|$(printf '%s\n' "$ps_out" | grep -Eq -- "$pattern" && echo 0 || echo 1)|ps"
  done <<< "$ACGS_DB_PROCESSES"
  # System Resources: cat /proc/loadavg; top; free -m; df -h; dmesg | grep -i "killed process"
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "SYS-01|$name|$(awk -v l="$load" -v m="$ACGS_LOAD_MAX" 'BEGIN{print (l <= m) ? 0 : 1}')|load $load"
  local idle
  idle=$(top -b -n 2 -d "$ACGS_CPU_SAMPLE" | grep '^%Cpu' | tail -n 1 | sed 's/.*, *\([0-9.]*\) id,.*/\1/')
  echo "SYS-02|$name|$(awk -v i="$idle" -v m="$ACGS_CPU_MAX" 'BEGIN{print (100 - i <= m) ? 0 : 1}')|cpu $((${idle%.*}))% idle"
  local mem
  mem=$(free | awk '/^Mem/ {printf("%.0f", ($2 - $7) / $2 * 100)}')
  echo "SYS-03|$name|$([ "$mem" -le "$ACGS_MEM_MAX" ] && echo 0 || echo 1)|mem $mem%"
  local m
  for m in ${mounts//,/ }; do
    local disk
    disk=$(df -P "$m" | tail -1 | awk '{print $5}' | sed 's/%//')
    echo "SYS-04|$name:$m|$([ "$disk" -le "$ACGS_DISK_MAX" ] && echo 0 || echo 1)|disk $disk%"
  done
  if [ -n "$ACGS_KERNEL_LOG" ]; then kern=$(tail -n "$TAIL" -- "$ACGS_KERNEL_LOG"); else kern=$(dmesg | tail -n "$TAIL"); fi
  echo "SYS-05|$name|$(printf '%s\n' "$kern" | grep -qi 'killed process' && echo 1 || echo 0)|oom"
  # Security: find -perm /o+w; ls -l secrets; grep failed logins / breach; cut -d: -f1 /etc/passwd; key ages
  if [[ ",$roles," == *",app,"* ]]; then
    echo "SEC-01|$name|$([ -z "$(find "$ACGS_APP_ROOT" -type f -perm /o+w 2>/dev/null | head -n 1)" ] && echo 0 || echo 1)|find"
    local f
    while read -r f; do
      [ -n "$f" ] || continue
      local mode
      mode=$(stat -c '%a' -- "$f")
      echo "SEC-02|$f@$name|$(( (8#$mode & ~8#$ACGS_SECRET_MODE) == 0 ? 0 : 1 ))|mode $mode"
    done <<< "$ACGS_SECRET_FILES"
    local kname kpath kkind krecord
    while IFS=$'\x1f' read -r kname kpath kkind krecord; do
      [ -n "$kname" ] || continue
      local limit=$ACGS_APP_KEY_DAYS rotated
      [ "$kkind" = app ] || limit=$ACGS_DB_KEY_DAYS
      if [ -n "$krecord" ]; then rotated=$(date -d "$(head -n 1 "$krecord")" +%s); else rotated=$(stat -c %Y -- "$kpath"); fi
      echo "SEC-05|$kname@$name|$(( ($(date +%s) - rotated) / 86400 <= limit ? 0 : 1 ))|age"
    done <<< "$ACGS_KEYS"
  fi
  local sec
  sec=$(for f in ${ACGS_SECURITY_LOG:-$ACGS_LOGS/*.log}; do [ -f "$f" ] && tail -n "$TAIL" -- "$f" \
        | grep -iE 'failed login|login failed|authentication failed|unauthori[sz]ed|breach|intrusion'; done)
  echo "SEC-03|$name|$([ "$(printf '%s\n' "$sec" | grep -ciE 'failed login|login failed|authentication failed|unauthori[sz]ed')" -le "$ACGS_FAILED_LOGINS_MAX" ] && echo 0 || echo 1)|failed logins"
  local users unknown
  users=$(cut -d: -f1 "$ACGS_PASSWD" | sort)
  unknown=$(comm -23 <(printf '%s\n' "$users") <(printf '%s\n' $ACGS_ALLOWED_USERS | sort))
  echo "SEC-04|$name|$([ -z "$unknown" ] && echo 0 || echo 1)|accounts"
  echo "SEC-06|$name|$(printf '%s\n' "$sec" | grep -qiE 'breach|intrusion' && echo 1 || echo 0)|breach"
  # Monitoring: tail -f /var/log/acgs/alerts.log (CRITICAL in the last window minutes, not resolved since)
  local since
  since=$(date -d "-$ACGS_ALERT_WINDOW minutes" '+%Y-%m-%d %H:%M:%S')
  echo "MON-01|$name|$(tail -n "$TAIL" -- "$ACGS_ALERTS_LOG" | awk -v s="$since" '
      { ts = $1 " " substr($2, 1, 8); if (match($0, /\[[A-Za-z]+-[0-9.]+\]/)) id = substr($0, RSTART, RLENGTH); else id = "" }
      / - CRITICAL - / && ts >= s { open[id] = 1 }
      /resolved/ && id != "" { delete open[id] }
      END { n = 0; for (k in open) n++; print (n == 0) ? 0 : 1 }')|alerts"
}

run_host() {  # run host_checks on a host: directly for a local one, in one ssh session otherwise
  local name=$1 address=$2 backend=$3 port=$4 identity=$5 known=$6 user=$7 roles=$8 mounts=$9
  if [ "$backend" = local ]; then
    host_checks "$name" "$roles" "$mounts"
  else
    local dest=$address
    [ -n "$user" ] && dest="$user@$address"
    { declare -p $(compgen -v ACGS_) HASH N TAIL 2>/dev/null; declare -f host_checks; echo "host_checks '$name' '$roles' '$mounts'"; } \
      | ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$known" -o IdentitiesOnly=yes \
            -o "IdentityFile=$identity" -o "ConnectTimeout=$ACGS_CONNECT_TIMEOUT" -p "${port:-22}" "$dest" bash -s \
      || echo "HOST|$name|1|unreachable"
  fi
}

# ------------------------------------------------------------------------------- Initial Assessment, Outage
# curl -f http://localhost:8016/health (one `curl -i` serves SVC-01, SVC-02 and SVC-08)
P99S=""
while IFS=$'\x1f' read -r svc role port scheme health ready live metrics log process unit metric; do
  [ -n "$svc" ] || continue
  while IFS=$'\x1f' read -r hname address hroles; do
    [[ ",$hroles," == *",$role,"* ]] || continue
    base="$scheme://$address:$port"
    reply=$(curl -s -i -m "$ACGS_HEALTH_TIMEOUT" "$base$health")
    code=$(printf '%s\n' "$reply" | head -n 1 | awk '{print $2}')
    verdict SVC-01 "$svc@$hname" "$([[ "$code" == 2* ]] && echo 0 || echo 1)" "HTTP $code"
    body=$(printf '%s\n' "$reply" | tail -n 1)
    verdict SVC-02 "$svc@$hname" "$(printf '%s' "$body" | grep -qiE '"status": ?"(healthy|ok)"' \
      && printf '%s' "$body" | grep -q "\"constitutional_hash\": \?\"$HASH\"" && echo 0 || echo 1)" "body"
    verdict SVC-08 "$svc@$hname" "$(printf '%s\n' "$reply" | grep -qi "^x-constitutional-hash: $HASH" && echo 0 || echo 1)" header
    # python scripts/latency_check.py: N samples on one keep-alive connection, p99 = the slowest of 20
    urls=()
    for _ in $(seq "$N"); do urls+=("$base$health"); done
    p99=$(curl -s -o /dev/null -m "$ACGS_HEALTH_TIMEOUT" -w '%{time_total}\n' "${urls[@]}" | sort -n | tail -n 1)
    verdict SVC-06 "$svc@$hname" "$(awk -v p="$p99" -v m="$ACGS_P99_FAIL_MS" 'BEGIN{print (p * 1000 < m) ? 0 : 1}')" "p99 ${p99}s"
    P99S+="$svc@$hname $(awk -v p="$p99" 'BEGIN{print p * 1000}') $(awk -v p="$p99" -v m="$ACGS_P99_FAIL_MS" 'BEGIN{print (p * 1000 < m) ? 1 : 0}')"$'\n'
    if [ -n "$metrics" ]; then                         # curl -s http://localhost:8016/metrics (SVC-10: Prometheus text)
      m=$(curl -s -m "$ACGS_HEALTH_TIMEOUT" "$base$metrics")
      verdict SVC-10 "$svc@$hname" "$(printf '%s' "$m" | head -c 1 | grep -q '[{"]' && echo 1 || { printf '%s\n' "$m" \
        | grep -Eq '^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? +[-+0-9.eE]+|^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? +(NaN|[+-]Inf)' && echo 0 || echo 1; })" metrics
    fi
    if [ -n "$ready$live" ]; then                      # curl -f .../health/ready; curl -f .../health/live
      r=0
      [ -z "$ready" ] || curl -sf -m "$ACGS_HEALTH_TIMEOUT" "$base$ready" | grep -q '"ready": \?true' || r=1
      [ -z "$live" ] || curl -sf -m "$ACGS_HEALTH_TIMEOUT" "$base$live" | grep -q '"alive": \?true' || r=1
      verdict SVC-09 "$svc@$hname" "$r" "ready/live"
    fi
  done <<< "$ACGS_SERVICE_HOSTS"
done <<< "$ACGS_SERVICES"

# SVC-12 (this run's p99 against the median of the last N passing runs) and MON-02 (share of runs in the window
# whose health check passed): the run history acgs-verify keeps, read as a person would with a short script
if [ -n "${ACGS_HISTORY:-}" ]; then
  while IFS='|' read -r id target res what; do
    [ -n "$id" ] && verdict "$id" "$target" "$res" "$what"
  done < <(printf '%s' "$P99S" | "$ACGS_PYTHON" -c '
import json, statistics, sys
from datetime import datetime, timedelta, timezone
path, profile, n, factor, warn, days, need, target, services = sys.argv[1:10]
runs = []
try:
    for line in open(path):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("profile") == profile and isinstance(e.get("services"), dict):
            runs.append(e)
except FileNotFoundError:
    pass
now = {k: float(v) for k, v, _ in (line.split() for line in sys.stdin if line.strip())}
since = (datetime.now(timezone.utc) - timedelta(days=float(days))).isoformat(timespec="seconds")
for sid in services.split():
    past = [r["services"][sid]["p99_ms"] for r in runs if r["services"].get(sid, {}).get("fast")
            and "p99_ms" in r["services"][sid]][-int(n):]
    if sid not in now or len(past) < int(n):
        print(f"SVC-12|{sid}|S|{len(past)} runs")
    else:
        base = max(statistics.median(past), 0.001)
        ok = now[sid] / base < float(factor) or now[sid] <= float(warn)
        print(f"SVC-12|{sid}|{0 if ok else 1}|{now[sid] / base:.1f}x")
    ups = [r["services"][sid]["up"] for r in runs if str(r.get("started")) >= since and "up" in r["services"].get(sid, {})]
    if len(ups) < int(need):
        print(f"MON-02|{sid}|S|{len(ups)} runs")
    else:
        print(f"MON-02|{sid}|{0 if 100 * sum(ups) / len(ups) >= float(target) else 1}|{100 * sum(ups) / len(ups):.2f} %")
' "$ACGS_HISTORY" "$ACGS_PROFILE_NAME" "$ACGS_BASELINE_RUNS" "$ACGS_BASELINE_FACTOR" "$ACGS_P99_WARN_MS" \
    "$ACGS_AVAIL_DAYS" "$ACGS_AVAIL_RUNS" "$ACGS_AVAIL_MIN" "$(printf '%s' "$P99S" | awk '{print $1}')")
fi

# SYS-06: ping -c 10 HOST (ICMP where this user may send it; TCP connect time to the host's ssh and service ports)
icmp_ok=1
read -r glo ghi < /proc/sys/net/ipv4/ping_group_range 2>/dev/null || glo=1 ghi=0
for g in $(id -G); do [ "$g" -ge "$glo" ] && [ "$g" -le "$ghi" ] && icmp_ok=0; done
command -v ping >/dev/null || icmp_ok=1
while IFS=$'\x1f' read -r name address backend port identity known user roles mounts; do
  [ -n "$name" ] || continue
  ports=""
  [ "$backend" = local ] || ports="${port:-22}"
  while IFS=$'\x1f' read -r svc role sport rest; do
    [ -n "$svc" ] && [[ ",$roles," == *",$role,"* ]] && ports="$ports $sport"
  done <<< "$ACGS_SERVICES"
  [ -n "${ports// /}" ] || continue                  # a local host without services: acgs-verify skips it too
  worst=0 failed=0
  for p in $(printf '%s\n' $ports | awk '!seen[$0]++'); do
    for _ in $(seq "$ACGS_NET_SAMPLES"); do
      t0=$EPOCHREALTIME
      { exec 3<>"/dev/tcp/$address/$p"; } 2>/dev/null && exec 3>&-
      t=$(( ( ${EPOCHREALTIME/./} - ${t0/./} ) ))
      [ "$t" -gt "$worst" ] && worst=$t
    done
  done
  if [ "$icmp_ok" = 0 ]; then
    ping -q -c "$ACGS_NET_SAMPLES" -i 0.2 -W "$ACGS_CONNECT_TIMEOUT" "$address" >/dev/null 2>&1 || failed=1
  fi
  verdict SYS-06 "$name" "$(awk -v w="$worst" -v m="$ACGS_NET_FAIL_MS" -v f="$failed" 'BEGIN{print (f == 0 && w / 1000 < m) ? 0 : 1}')" "worst ${worst} us"
done <<< "$ACGS_HOST_LINES"

# Host checks (ps, netstat, systemctl, logs, top, free, df, dmesg, find, passwd, alerts), host by host
while IFS=$'\x1f' read -r name address backend port identity known user roles mounts; do
  [ -n "$name" ] || continue
  while IFS='|' read -r id target res what; do
    [ -n "$id" ] && verdict "$id" "$target" "$res" "$what"
  done < <(run_host "$name" "$address" "$backend" "$port" "$identity" "$known" "$user" "$roles" "$mounts")
done <<< "$ACGS_HOST_LINES"

# ------------------------------------------------------------------------------------------------ Database
q() { PGPASSWORD=$1 PGCONNECT_TIMEOUT=$ACGS_DB_TIMEOUT psql "$2" -X -A -t -q -v ON_ERROR_STOP=1 -c "$3" 2>&1; }
while IFS=$'\x1f' read -r db dsn password audit replicas pools; do
  [ -n "$db" ] || continue
  verdict DB-01 "$db" "$([ "$(q "$password" "$dsn" 'SELECT 1;')" = 1 ] && echo 0 || echo 1)" "SELECT 1"
  verdict DB-03 "$db" "$(q "$password" "$dsn" "SELECT count(*) * 100 < $ACGS_DB_CONN_MAX * current_setting('max_connections')::int FROM pg_stat_activity WHERE backend_type = 'client backend';" | grep -q t && echo 0 || echo 1)" connections
  verdict DB-04 "$db" "$([ "$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND (now() - query_start) > interval '$ACGS_DB_LONG seconds' AND pid <> pg_backend_pid();")" = 0 ] && echo 0 || echo 1)" long
  verdict DB-05 "$db" "$([ "$(q "$password" "$dsn" "SELECT count(*) FROM pg_catalog.pg_locks blocked_locks JOIN pg_catalog.pg_stat_activity blocked_activity ON blocked_activity.pid = blocked_locks.pid JOIN pg_catalog.pg_locks blocking_locks ON blocking_locks.locktype = blocked_locks.locktype AND blocking_locks.database IS NOT DISTINCT FROM blocked_locks.database AND blocking_locks.relation IS NOT DISTINCT FROM blocked_locks.relation AND blocking_locks.pid != blocked_locks.pid WHERE NOT blocked_locks.granted;")" -le "$ACGS_DB_BLOCKED_MAX" ] && echo 0 || echo 1)" locks
  stmts=$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_statements WHERE mean_exec_time > $ACGS_DB_MEAN_MS;")
  verdict DB-06 "$db" "$([ "$stmts" = 0 ] && echo 0 || echo 1)" "slow statements $stmts"
  lag=$(q "$password" "$dsn" "SELECT count(*) FILTER (WHERE state <> 'streaming' OR coalesce(extract(epoch FROM replay_lag), 0) >= $ACGS_DB_LAG_MAX) FROM pg_stat_replication;")
  for r in $replicas; do
    lag=$((lag + $(q "$password" "$r" "SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() OR coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) < $ACGS_DB_LAG_MAX THEN 0 ELSE 1 END;")))
  done
  verdict DB-07 "$db" "$([ "$lag" = 0 ] && echo 0 || echo 1)" replication
  verdict DB-08 "$db" "$(q "$password" "$dsn" "SELECT blks_hit + blks_read = 0 OR 100.0 * blks_hit / (blks_hit + blks_read) >= $ACGS_DB_HIT_MIN FROM pg_stat_database WHERE datname = current_database();" | grep -q t && echo 0 || echo 1)" "cache hit"
  verdict DB-09 "$db" "$([ "$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_user_tables WHERE greatest(last_analyze, last_autoanalyze) IS NULL OR greatest(last_analyze, last_autoanalyze) < now() - interval '$ACGS_DB_STATS_DAYS days';")" = 0 ] && echo 0 || echo 1)" stats
  # DB-11: the runbook's bloat query (sizes), and the dead-tuple share of tables over the size floor
  q "$password" "$dsn" "SELECT schemaname, relname, pg_size_pretty(pg_total_relation_size(relid)) FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC;" >/dev/null
  verdict DB-11 "$db" "$([ "$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_user_tables WHERE n_live_tup + n_dead_tup >= $ACGS_DB_BLOAT_ROWS AND 100.0 * n_dead_tup / nullif(n_live_tup + n_dead_tup, 0) >= $ACGS_DB_DEAD_MAX;")" = 0 ] && echo 0 || echo 1)" bloat
  # DB-12 (warns only): indexes never scanned, large tables read mostly by sequential scans
  unused=$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_user_indexes i JOIN pg_index x ON x.indexrelid = i.indexrelid JOIN pg_stat_user_tables t ON t.relid = i.relid WHERE i.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary AND t.n_live_tup >= $ACGS_DB_BLOAT_ROWS;")
  seqs=$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_user_tables WHERE n_live_tup >= $ACGS_DB_BLOAT_ROWS AND seq_scan > coalesce(idx_scan, 0);")
  verdict DB-12 "$db" 0 "unused indexes $unused, seq-scanned tables $seqs (warns only)"
  # DB-13: python scripts/connection_pool_stats.py (idle in transaction; connections per application vs pool size)
  idle=$(q "$password" "$dsn" "SELECT count(*) FROM pg_stat_activity WHERE state IN ('idle in transaction', 'idle in transaction (aborted)') AND now() - state_change > interval '$ACGS_DB_IDLE_TX seconds';")
  over=$(q "$password" "$dsn" "SELECT coalesce(application_name, '') || '=' || count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() GROUP BY application_name;" \
    | awk -F= -v pools="$pools" 'BEGIN { n = split(pools, a, ","); for (i = 1; i <= n; i++) { split(a[i], kv, ":"); size[kv[1]] = kv[2] } }
        ($1 in size) && $2 + 0 > size[$1] + 0 { over++ } END { print over + 0 }')
  verdict DB-13 "$db" "$([ "$idle" = 0 ] && [ "$over" = 0 ] && echo 0 || echo 1)" "idle in transaction $idle, pools over $over"
  if [ -n "$audit" ]; then
    verdict DB-10 "$db" "$([ "$(q "$password" "$dsn" "SELECT count(*) FROM $audit WHERE created_at < NOW() - INTERVAL '$ACGS_AUDIT_DAYS days';")" = 0 ] && echo 0 || echo 1)" retention
    # python scripts/compliance_report.py (CC-04; with the compliance metric below)
    rate=$(q "$password" "$dsn" "SELECT coalesce(100.0 * count(*) FILTER (WHERE (event_data ->> 'compliant')::boolean) / nullif(count(*), 0), 100) FROM $audit WHERE event_type = 'governance_decision' AND timestamp > now() - interval '24 hours';")
    verdict CC-04 "$db" "$(awk -v r="$rate" -v m="$ACGS_COMPLIANCE_MIN" 'BEGIN{print (r >= m) ? 0 : 1}')" "rate $rate"
    # python scripts/security_audit.py (CC-05: the hash chain of the newest rows)
    verdict CC-05 "$db" "$([ "$(q "$password" "$dsn" "WITH recent AS (SELECT id, prev_hash, current_hash, constitutional_hash FROM $audit ORDER BY id DESC LIMIT $ACGS_AUDIT_ROWS), linked AS (SELECT prev_hash, constitutional_hash, lag(current_hash) OVER (ORDER BY id) AS prev, row_number() OVER (ORDER BY id) AS pos FROM recent) SELECT count(*) FILTER (WHERE (pos > 1 AND prev_hash IS DISTINCT FROM prev) OR constitutional_hash IS DISTINCT FROM '$HASH') FROM linked;")" = 0 ] && echo 0 || echo 1)" chain
  fi
done <<< "$ACGS_DATABASES"
while IFS=$'\x1f' read -r svc url metric; do   # the compliance gauge on a service's /metrics (CC-04's other source)
  [ -n "$svc" ] || continue
  v=$(curl -sf -m "$ACGS_HEALTH_TIMEOUT" "$url" | grep "^$metric" | awk '{print $2}' | head -n 1)
  verdict CC-04 "$svc" "$(awk -v v="${v:-0}" -v m="$ACGS_COMPLIANCE_MIN" 'BEGIN{print (100 * v >= m) ? 0 : 1}')" "metric $v"
done <<< "$ACGS_COMPLIANCE_METRICS"

# ---------------------------------------------------------------------------------------------------- Cache
while IFS=$'\x1f' read -r name host port password hash_key; do
  [ -n "$name" ] || continue
  export REDISCLI_AUTH=$password
  verdict RD-01 "$name" "$([ "$(redis-cli -h "$host" -p "$port" ping)" = PONG ] && echo 0 || echo 1)" ping
  # redis-cli --latency: ACGS_REDIS_SAMPLES timed PINGs (--latency itself samples every 10 ms: slower than this)
  worst=0
  for _ in $(seq "$ACGS_REDIS_SAMPLES"); do
    t0=$(date +%s%N); redis-cli -h "$host" -p "$port" ping >/dev/null; t=$(( ($(date +%s%N) - t0) / 1000 ))
    [ "$t" -gt "$worst" ] && worst=$t
  done
  verdict RD-02 "$name" 0 "p99 <= ${worst} us (process start included, so not judged)"
  stats=$(redis-cli -h "$host" -p "$port" info stats | tr -d '\r')   # redis-cli info stats | grep keyspace_hits
  hits=$(printf '%s\n' "$stats" | awk -F: '/^keyspace_hits/ {print $2}')
  misses=$(printf '%s\n' "$stats" | awk -F: '/^keyspace_misses/ {print $2}')
  verdict RD-03 "$name" "$(awk -v h="$hits" -v m="$misses" -v min="$ACGS_HIT_MIN" -v n="$ACGS_HIT_LOOKUPS" \
    'BEGIN{print (h + m < n || 100 * h / (h + m) >= min) ? 0 : 1}')" "hits $hits misses $misses"
  if [ -n "$hash_key" ]; then
    verdict CC-06 "$name" "$([ "$(redis-cli -h "$host" -p "$port" get "$hash_key")" = "$HASH" ] && echo 0 || echo 1)" hash
  fi
done <<< "$ACGS_REDIS"

# --------------------------------------------------------------------- Backups, certificates, policies (issue 5)
if [ -n "${ACGS_BACKUP_DIR:-}" ] && [ -d "$ACGS_BACKUP_DIR" ]; then
  latest=$(ls -1d "$ACGS_BACKUP_DIR"/[0-9]*/ 2>/dev/null | sort | tail -n 1)
  verdict BK-01 backups "$([ -n "$latest" ] && [ -n "$(find "$latest" -maxdepth 0 -mmin -$((ACGS_BACKUP_HOURS * 60)))" ] && echo 0 || echo 1)" "$latest"
  r2=0; r3=0
  for f in ${ACGS_BACKUP_FILES:-$(ls -1 "$latest")}; do   # ls -la /var/backups/acgs/YYYYMMDD; gzip -t; tar -tzf
    [ -s "$latest/$f" ] || r2=1
    gzip -t "$latest/$f" 2>/dev/null || r3=1
    case $f in *.tar.gz) tar -tzf "$latest/$f" >/dev/null 2>&1 || r3=1 ;; esac
  done
  verdict BK-02 backups "$r2" files
  verdict BK-03 backups "$r3" "gzip -t"
  verdict BK-04 backups "$(zcat "$latest/database.sql.gz" 2>/dev/null | tail -n 6 | grep -q 'PostgreSQL database dump complete' && echo 0 || echo 1)" dump
  verdict BK-05 backups "$([ -z "$(find "$ACGS_BACKUP_DIR" -mindepth 1 -maxdepth 1 -type d -mtime +"$ACGS_BACKUP_RETENTION")" ] && echo 0 || echo 1)" retention
  prev=$(ls -1d "$ACGS_BACKUP_DIR"/[0-9]*/ | sort | tail -n 2 | head -n 1)
  verdict BK-06 backups "$(awk -v a="$(stat -c %s "$latest/database.sql.gz" 2>/dev/null || echo 0)" -v b="$(stat -c %s "$prev/database.sql.gz" 2>/dev/null || echo 0)" 'BEGIN{print (b == 0 || a >= 0.5 * b) ? 0 : 1}')" size
fi
while read -r cert; do                                   # openssl x509 -in cert.pem -noout -enddate
  [ -n "$cert" ] || continue
  verdict TLS-01 "$cert" "$(openssl x509 -in "$cert" -noout -checkend $((ACGS_CERT_FAIL_DAYS * 86400)) >/dev/null && echo 0 || echo 1)" expiry
done <<< "${ACGS_CERTS:-}"
while read -r endpoint; do                               # openssl s_client -connect host:443 | openssl x509 -enddate
  [ -n "$endpoint" ] || continue
  hp=${endpoint#*://}; hp=${hp%%/*}
  verdict TLS-02 "$endpoint" "$(openssl s_client -connect "$hp" -servername "${hp%:*}" -verify_return_error \
    ${ACGS_CA_FILE:+-CAfile "$ACGS_CA_FILE"} </dev/null 2>/dev/null | openssl x509 -noout -checkend $((ACGS_CERT_FAIL_DAYS * 86400)) >/dev/null 2>&1 && echo 0 || echo 1)" live
done <<< "${ACGS_TLS_ENDPOINTS:-}"
if [ -n "${ACGS_POLICY_DIR:-}" ] && [ -d "$ACGS_POLICY_DIR" ]; then   # python scripts/validate_constitutional_policies.py
  while IFS='|' read -r f res; do
    [ -n "$f" ] && verdict CC-03 "$f" "$res" policy
  done < <("$ACGS_PYTHON" - "$ACGS_POLICY_DIR" "$HASH" <<'EOF'
import json, pathlib, sys, yaml
for p in sorted(pathlib.Path(sys.argv[1]).rglob("*")):
    if p.suffix not in (".json", ".yaml", ".yml", ".rego"):
        continue
    text = p.read_text(errors="replace")
    try:
        json.loads(text) if p.suffix == ".json" else (yaml.safe_load(text) if p.suffix != ".rego" else None)
        ok = sys.argv[2] in text
    except Exception:
        ok = False
    print(f"{p}|{0 if ok else 1}")
EOF
)
fi

echo "runbook.sh: $((PASS + FAIL)) checks, $PASS passed, $FAIL failed, $SKIP skipped"
