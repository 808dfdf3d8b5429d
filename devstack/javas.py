"""Find a Java runtime of at least a given major version on this machine."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class JavaRuntime:
    path: str
    major: int


@lru_cache(maxsize=None)
def _probe(path: str) -> JavaRuntime | None:
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(out)
    if not match:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return JavaRuntime(os.path.realpath(path), major)


def candidates(java_home: str | None = None) -> list[str]:
    """Java executables worth probing, most explicit first."""
    paths: list[str] = []
    if java_home:
        return [os.path.join(java_home, "bin", "java")]
    if os.environ.get("JAVA_HOME"):
        paths.append(os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    on_path = shutil.which("java")
    if on_path:
        paths.append(on_path)
    paths += sorted(glob.glob("/usr/lib/jvm/*/bin/java"))
    paths += sorted(glob.glob("/opt/java/*/bin/java"))
    seen: set[str] = set()
    unique = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen and os.access(real, os.X_OK):
            seen.add(real)
            unique.append(real)
    return unique


def find_java(min_major: int, java_home: str | None = None) -> JavaRuntime | None:
    """The newest Java of at least ``min_major`` found, or None.

    ``java_home`` (an override such as REGISTRY_JAVA_HOME) restricts the search to that one JDK.
    """
    found = [rt for rt in map(_probe, candidates(java_home)) if rt and rt.major >= min_major]
    return max(found, key=lambda rt: rt.major, default=None)


def describe_available(java_home: str | None = None) -> str:
    """A short list of the Java runtimes seen, for error messages."""
    seen = [rt for rt in map(_probe, candidates(java_home)) if rt]
    if not seen:
        return "no Java at all"
    return ", ".join(f"Java {rt.major} at {rt.path}" for rt in seen)
