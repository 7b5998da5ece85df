"""DDS transport profiles (config/fastdds.xml, config/cyclonedds.xml) and the env vars for them.

The middleware reads these variables once per process, when the first participant is created
(``rclpy.init``), so they must be in the environment of every process that sends or receives
large images before it starts: the launch file and the main job pass
:func:`transport_environment` to the processes they start, and
``eval "$(python3 -m fvt_segmentation.tools.dds_profiles)"`` sets them in a shell (e.g. before
starting a camera driver). No rclpy import here.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
import os
from pathlib import Path
import shlex
import sys

from fvt_segmentation.core.resources import share_directories

FASTDDS_PROFILE = 'fastdds.xml'
CYCLONEDDS_CONFIG = 'cyclonedds.xml'
FASTDDS2_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'  # Fast DDS 2.x (Humble, Jazzy)
FASTDDS3_VARIABLE = 'FASTDDS_DEFAULT_PROFILES_FILE'  # Fast DDS 3.x (Kilted and later)
FASTDDS_VARIABLES = (FASTDDS2_VARIABLE, FASTDDS3_VARIABLE)
FASTDDS2_DISTROS = frozenset({'foxy', 'galactic', 'humble', 'iron', 'jazzy'})
CYCLONEDDS_VARIABLE = 'CYCLONEDDS_URI'


def find_config_dir() -> Path:
    """Return the first ``config`` dir holding ``fastdds.xml``, installed or in the checkout.

    The places searched are those of :func:`resources.share_directories`.
    """
    candidates = [share / 'config' for share in share_directories()]
    for candidate in candidates:
        if (candidate / FASTDDS_PROFILE).is_file():
            return candidate
    searched = ', '.join(str(c) for c in candidates)
    raise FileNotFoundError(f'expected {FASTDDS_PROFILE} in one of: {searched}')


def resolve_config_dir(share_or_config_dir: str | Path | None = None) -> Path:
    """Return the config dir for a package share dir, a config dir, or None (auto-find)."""
    if share_or_config_dir is None:
        return find_config_dir()
    base = Path(share_or_config_dir).resolve()
    for candidate in (base, base / 'config'):
        if (candidate / FASTDDS_PROFILE).is_file():
            return candidate
    raise FileNotFoundError(
        f'expected {FASTDDS_PROFILE} in {base} or {base / "config"}, found neither')


def fastdds_profile_variables(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Return the profile variable(s) the installed Fast DDS reads.

    Decided by ``ROS_DISTRO`` (set by the ROS setup scripts), else by the version of the
    ``ros-fastdds`` wheel (pip installs), else both names. Setting only the one that applies
    matters: the Kilted rmw also reads the 2.x name, with a deprecation warning per process.
    """
    environ = os.environ if environ is None else environ
    distro = environ.get('ROS_DISTRO', '').strip().lower()
    if distro:
        return (FASTDDS2_VARIABLE,) if distro in FASTDDS2_DISTROS else (FASTDDS3_VARIABLE,)
    try:
        major = int(metadata.version('ros-fastdds').split('.')[0])
    except (metadata.PackageNotFoundError, ValueError):
        return FASTDDS_VARIABLES
    return (FASTDDS2_VARIABLE,) if major < 3 else (FASTDDS3_VARIABLE,)


def transport_environment(share_or_config_dir: str | Path | None = None,
                          environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the env vars that apply the shipped profiles, minus those the user already set.

    ``environ`` defaults to ``os.environ``. If either Fast DDS variable is set (non-empty),
    the user has chosen a Fast DDS profile and none is returned; likewise ``CYCLONEDDS_URI``.
    Fast DDS 2.x reads ``FASTRTPS_DEFAULT_PROFILES_FILE``, 3.x ``FASTDDS_DEFAULT_PROFILES_FILE``
    (see :func:`fastdds_profile_variables`). Both profiles are returned whatever
    ``RMW_IMPLEMENTATION`` says: the other middleware ignores the other variable.
    """
    environ = os.environ if environ is None else environ
    config_dir = resolve_config_dir(share_or_config_dir)
    result: dict[str, str] = {}
    if not any(environ.get(name) for name in FASTDDS_VARIABLES):
        profile = str(config_dir / FASTDDS_PROFILE)
        result.update({name: profile for name in fastdds_profile_variables(environ)})
    cyclone = config_dir / CYCLONEDDS_CONFIG
    if not environ.get(CYCLONEDDS_VARIABLE) and cyclone.is_file():
        result[CYCLONEDDS_VARIABLE] = cyclone.as_uri()
    return result


def apply_transport_environment(share_or_config_dir: str | Path | None = None) -> dict[str, str]:
    """Add :func:`transport_environment` to ``os.environ``; returns what was added.

    Only effective when called before this process's first ``rclpy.init``.
    """
    added = transport_environment(share_or_config_dir)
    os.environ.update(added)
    return added


def main() -> int:
    """Print ``export`` lines for a shell.

    Use: ``eval "$(python3 -m fvt_segmentation.tools.dds_profiles)"``.
    """
    for name, value in transport_environment().items():
        print(f'export {name}={shlex.quote(value)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
