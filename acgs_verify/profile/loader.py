"""Loading a profile: find it by name or path, follow `extends:`, interpolate ${VAR}, apply --set, validate,
read the secrets it names.

>>> profile = load_profile("sandbox", overrides=["thresholds.db_long_query_seconds=60"])
>>> profile.thresholds.db_long_query_seconds
60.0

Every step raises ProfileError, one line naming the file, the line and the field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from acgs_verify.profile.model import PATH_NAME_RE, TARGET_FIELDS, Profile, ProfileError
from acgs_verify.profile.overrides import apply_overrides
from acgs_verify.profile.secrets import read_secrets
from acgs_verify.profile.source import Located, SourceError, display_path, read_yaml, validation_line


def load_profile(name_or_path: str, overrides: Iterable[str] = (), resolve_secrets: bool = True) -> Profile:
    """Load, merge, interpolate, override, validate, and resolve secrets. Raises ProfileError.

    resolve_secrets=False is for listing what would run (catalog, --collect-only), not for running it.
    """
    path = find_profile(name_or_path)
    located = _load_chain(path)
    data = _interpolate(located.data, located)
    overridden = apply_overrides(data, overrides)
    # a file name may hold anything; the profile's name becomes part of a directory name
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).lstrip(".-") or "profile")
    if not any(data.get(field) for field in TARGET_FIELDS):
        raise ProfileError(f"{display_path(path)}: names no target: give hosts (or inventory), services, databases,"
                           " redis, certificates or tls_endpoints (an empty profile would check this machine at the "
                           "runbook's production paths)")
    _add_inventory_hosts(data, path, located)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(validation_line(exc, located, overridden)) from None
    _check_path_name(profile.name, located, overridden)
    secrets = read_secrets(profile, located) if resolve_secrets else {}
    return profile.model_copy(update={"secrets": secrets, "source": str(path)})


def _check_path_name(name: str, located: Located, overridden: list[tuple[tuple, str]]) -> None:
    if PATH_NAME_RE.fullmatch(name):
        return
    source = next((f"--set {text}" for real, text in overridden if real == ("name",)), located.at(("name",)))
    raise ProfileError(f"{source}: name {name[:60]!r} becomes part of the run's directory name: use letters, digits,"
                       " '.', '_' and '-' (not first)")


def _add_inventory_hosts(data: dict, profile_path: Path, located: Located) -> None:
    inv = data.get("inventory")
    if not isinstance(inv, str) or not inv:
        return
    from acgs_verify.inventory import InventoryError, inventory_hosts

    path = Path(inv).expanduser()
    if not path.is_absolute():
        path = profile_path.parent / path
    data["inventory"] = str(path.resolve())
    try:
        found = inventory_hosts(path.resolve())
    except InventoryError as exc:
        raise ProfileError(f"{located.at(('inventory',))}: {exc}") from None
    data["hosts"] = (data["hosts"] if isinstance(data.get("hosts"), list) else []) + found


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ./profiles, $ACGS_VERIFY_PROFILES, then the shipped ones."""
    dirs = [Path.cwd() / "profiles"]
    dirs += [Path(p) for p in os.environ.get("ACGS_VERIFY_PROFILES", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent.parent  # acgs_verify/
    dirs += [here / "_profiles", here.parent / "profiles"]
    return dirs


def available_profiles() -> list[str]:
    """The names `--profile` accepts here, from every directory of profile_dirs()."""
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_profile(name_or_path: str, relative_to: Path | None = None) -> Path:
    """"staging" -> the first profiles/staging.yaml of profile_dirs(); a path is taken as it is. ProfileError if
    neither is a file (naming the profiles there are)."""
    looks_like_path = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        p = Path(name_or_path).expanduser()
        if not p.is_absolute() and relative_to is not None:
            p = relative_to / p
        if p.is_dir():
            raise ProfileError(f"{p} is a directory, not a profile: give a profile's .yaml file or its name")
        if not p.is_file():
            raise ProfileError(f"profile file not found: {p}")
        return p.resolve()
    if relative_to is not None and (relative_to / f"{name_or_path}.yaml").is_file():
        return (relative_to / f"{name_or_path}.yaml").resolve()
    for d in profile_dirs():
        p = d / f"{name_or_path}.yaml"
        if p.is_file():
            return p.resolve()
    if relative_to is None and Path(name_or_path).expanduser().is_dir():
        raise ProfileError(f"{name_or_path} is a directory, not a profile: give a profile's .yaml file or its name")
    raise ProfileError(
        f"unknown profile {name_or_path!r}; available: {', '.join(available_profiles()) or 'none'}"
    )


def _merge(base: Located, over: Located) -> Located:
    """Maps merge key by key; lists and scalars replace (docs/design.md)."""

    def merge(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a[k], v, path + (k,)) if k in a else v
            return out
        return b

    # where the child replaces a list or scalar, the parent's locations below it no longer apply
    replaced = [q for q in over.where if q and not _is_map_path(over.data, q)]
    where = {p: w for p, w in base.where.items() if not any(p[: len(q)] == q for q in replaced)}
    where.update(over.where)
    return Located(merge(base.data, over.data, ()), where)


def _is_map_path(data, path) -> bool:
    for k in path:
        if not isinstance(data, dict) or k not in data:
            return False
        data = data[k]
    return isinstance(data, dict)


def _load_chain(path: Path, chain: tuple[Path, ...] = ()) -> Located:
    if path in chain:
        cycle = " -> ".join(display_path(p) for p in chain + (path,))
        raise ProfileError(f"{display_path(path)}: extends cycle: {cycle}")
    try:
        located = read_yaml(path)
    except SourceError as exc:
        raise ProfileError(str(exc)) from None
    parent = located.data.pop("extends", None)
    if parent is None:
        return located
    if not isinstance(parent, str):
        file, line = located.where.get(("extends",), (display_path(path), 1))
        raise ProfileError(f"{file}:{line}: extends: must be a profile name or path")
    try:
        parent_path = find_profile(parent, relative_to=path.parent)
    except ProfileError as exc:
        file, line = located.where.get(("extends",), (display_path(path), 1))
        raise ProfileError(f"{file}:{line}: extends: {exc}") from None
    return _merge(_load_chain(parent_path, chain + (path,)), located)


_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(data: Any, located: Located, path: tuple = ()) -> Any:
    """${VAR} and ${VAR:-default} in string values, so one profile serves several sandboxes."""
    if isinstance(data, dict):
        return {k: _interpolate(v, located, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, located, path + (i,)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match) -> str:
            value = os.environ.get(m.group(1))
            if value is None or (value == "" and m.group(2) is not None):
                if m.group(2) is None:
                    raise ProfileError(f"{located.at(path)}: environment variable {m.group(1)} is not set")
                return m.group(2)
            return value

        return _VAR_RE.sub(sub, data)
    return data
