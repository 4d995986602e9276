"""Find, load and validate target profiles: the shipped ones, the user's, and ``host``."""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path

from .._io import read_toml
from .._schema import SchemaError, from_dict, replace
from ..errors import ProfileError
from .host import host_profile
from .profile import Profile



def load_profile_file(path: str | os.PathLike) -> Profile:
    """Read and validate one TOML profile; errors name the file and the key."""
    path = Path(path)
    data = read_toml(path, "profile file", "a profile is a UTF-8 TOML file; see profiles/README.md", ProfileError)
    try:
        profile = from_dict(Profile, data)
    except SchemaError as exc:
        raise ProfileError(f"{path}: {exc}", "fix the profile file; see profiles/README.md") from None
    return _with_path(profile, str(path))


def _with_path(profile: Profile, path: str) -> Profile:
    return replace(profile, path=path)


def _profile_files() -> list[tuple[str, object]]:
    """Shipped profiles first, then EDGEKIT_PROFILES (whose ids must be new)."""
    files: list[tuple[str, object]] = []
    shipped = resources.files("edgekit.profiles")
    files += sorted(((str(f), f) for f in shipped.iterdir() if f.name.endswith(".toml")), key=lambda t: t[0])
    user_dir = os.environ.get("EDGEKIT_PROFILES")
    if user_dir:
        if not Path(user_dir).is_dir():
            raise ProfileError(
                f"EDGEKIT_PROFILES={user_dir} is not a directory",
                "point it at a directory of .toml profiles or unset it",
            )
        files += [(str(p), p) for p in sorted(Path(user_dir).glob("*.toml"))]
    return files


def all_profiles(include_host: bool = True) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for name, handle in _profile_files():
        if isinstance(handle, Path):
            profile = load_profile_file(handle)
        else:
            with resources.as_file(handle) as real:  # type: ignore[arg-type]
                profile = load_profile_file(real)
        # A user profile that silently replaced a shipped one would change every plan for that
        # target without a word; a new id says plainly which board is meant.
        clash = profiles.get(profile.id) or next((p for p in profiles.values() if profile.id in p.aliases), None)
        if clash is not None:
            raise ProfileError(f"profile {name} uses the id {profile.id!r}, already taken by {clash.path}",
                               "give your profile its own id (e.g. myboard-pi5), or pass its path with --target")
        profiles[profile.id] = profile
    if include_host:
        profiles["host"] = host_profile()
    return profiles


def resolve(target: str) -> Profile:
    """A profile by id, alias or path to a TOML file; unknown names suggest the closest ones."""
    if target.endswith(".toml") or os.sep in target:
        return load_profile_file(target)
    if target in ("host", "local", "this"):
        return host_profile()
    profiles = all_profiles(include_host=False)
    by_name: dict[str, Profile] = {}
    for profile in profiles.values():
        by_name[profile.id] = profile
        for alias in profile.aliases:
            by_name.setdefault(alias, profile)
    if target in by_name:
        return by_name[target]
    names = sorted(set(by_name) | {"host"})
    close = difflib.get_close_matches(target, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}?" if close else "run 'edgekit targets list'"
    raise ProfileError(f"unknown target {target!r}", f"{hint} Known: {', '.join(sorted(profiles))}, host")
