"""The Redis server of the stack, chosen among every one that listens by the fact that decides: a service's
environment naming it, then the services' established connections, then the runbook's port.

>>> find_redis(reader, services)          # fills reader.found.redis
>>> reader.found.redis[0].evidence[1]
"chosen by the services' established connections (4 to 6380), of 2 Redis servers (ports 6379, 6380)"
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from acgs_verify.discover.choice import choose, chosen
from acgs_verify.discover.cmdline import bracket
from acgs_verify.discover.connections import services_peers
from acgs_verify.discover.model import Item
from acgs_verify.discover.postgres import env_urls, listeners_of
from acgs_verify.discover.reader import HostReader

REDIS_PORT = 6379
REDIS_VARS = re.compile(r"(^|_)(REDIS_URL|REDIS_DSN|CACHE_URL)$")


def find_redis(reader: HostReader, services: list) -> None:
    found = reader.found
    servers = listeners_of(reader, "redis-server")
    urls = env_urls(reader, services, REDIS_VARS, "redis")
    env_ports = {urlsplit(u[0]).port or REDIS_PORT: u for u in urls}
    peers, read = services_peers(reader, services)
    ports = [p for p, _, _ in servers]
    connected = {p for p in ports if peers.get(p)}
    pick = choose(ports, [("a service's environment names it", set(env_ports)),
                          ("the services' established connections (" +
                           ", ".join(f"{peers[p]} to {p}" for p in sorted(connected)) + ")", connected)],
                  REDIS_PORT + reader.offset)
    if pick.port is None:
        found.todos.append("redis: no Redis listens here" if not servers else
                           f"redis: {len(servers)} Redis servers listen (ports {', '.join(map(str, pick.undecided))})"
                           f" and no fact chose one ({read} of {len(services)} services' connections readable)")
        return
    port, proc, address, ev = chosen(pick, servers, "Redis", "cache", found)
    if port in env_ports:
        url, var, pid = env_ports[port]
        ev.append(f"{var} in the environment of pid {pid}, rebuilt from its host, port and database: no password")
    else:
        url = f"redis://{bracket(address)}:{port}/0"
        ev.append("no service names a Redis URL: database 0")
    data = {"name": "cache", "url": url}
    asked = _asks_password(address, port) if reader.host.backend == "local" else None
    if asked is False:
        ev.append("no password_env: it answered PING without a password; add `password_env: ACGS_REDIS_PASSWORD` "
                  "if the checker's host needs one")
    else:
        data["password_env"] = "ACGS_REDIS_PASSWORD"
        why = ("it refused PING without a password (export it)" if asked else
               "a PING without a password could not tell; remove it if Redis needs none" if asked is None and
               reader.host.backend == "local" else "not asked from here (a remote host); remove it if Redis needs none")
        ev.append(f"password_env: ACGS_REDIS_PASSWORD: {why}")
    found.redis.append(Item(data, ev))
    for p, pr, a in servers:
        if p != port:
            found.todos.append(f"another Redis on {a}:{p} (pid {pr.pid}) left out")


def _asks_password(address: str, port: int) -> bool | None:
    """True when a PING without a password is refused for want of one (NOAUTH, WRONGPASS), False when it is
    answered, None when the server could not tell (timeout, anything else)."""
    import redis

    client = redis.Redis(host=address, port=port, socket_timeout=2, socket_connect_timeout=2, retry=None)
    try:
        return not client.ping()
    except redis.AuthenticationError:
        return True
    except redis.ResponseError as exc:
        return True if re.match(r"(NOAUTH|WRONGPASS)", str(exc)) else None
    except redis.RedisError:
        return None
    finally:
        client.close()
