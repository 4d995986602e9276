"""Target devices as data: the profile schema, the shipped profiles and the host."""

from .host import host_profile
from .profile import Profile
from .registry import all_profiles, load_profile_file, resolve

__all__ = ["Profile", "all_profiles", "host_profile", "load_profile_file", "resolve"]
