"""The jar cache is shared by every checkout: two starts at the same moment on an empty cache both
succeed, and each fetch or unpack into it happens once (the other start waits for it).

Each test races two real processes, released together, on a fresh cache in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from devstack.stack import KafkaBroker, _pom_property

ROOT = Path(__file__).resolve().parents[2]
WAITING = "waiting for another start fetching"


def _race(script: str, *args: str, env: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Run script in two processes that start its work together; (exit code, stdout, stderr) each.

    Each process prints "ready" once it has imported devstack and then waits for a line on stdin,
    so neither gets ahead by the time Python takes to start.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    processes = [
        subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for process in processes:
            assert process.stdout.readline() == "ready\n", process.stderr.read()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=60)
            results.append((process.returncode, out, err))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


MAVEN_FETCH = """
import sys
from pathlib import Path
from devstack import stack
print("ready", flush=True)
sys.stdin.readline()
pom, target, log = (Path(arg) for arg in sys.argv[1:4])
stack._maven_fetch(pom, target, log, "the JMX exporter")
"""


def test_two_starts_fetching_through_maven_at_once_fetch_once_and_both_succeed(tmp_path):
    # The JMX exporter's pom: one small jar without dependencies, which any start of the stack has
    # put into Maven's local repository, so mvn copies it without the network (else it fetches it
    # from Maven Central, once, and it is there afterwards).
    pom = KafkaBroker.agent_pom
    version = _pom_property(pom, "jmx-exporter.version")
    jar = f"jmx_prometheus_javaagent-{version}.jar"
    local = Path.home() / ".m2" / "repository" / "io" / "prometheus" / "jmx" \
        / "jmx_prometheus_javaagent" / version / jar
    assert shutil.which("mvn"), "Maven is not installed (scripts/system-packages.sh installs it)"
    # A mvn in front of the real one that counts its runs.
    runs = tmp_path / "mvn-runs"
    shim = tmp_path / "bin" / "mvn"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$$" >> {runs}\nexec {shutil.which("mvn")} "$@"\n')
    shim.chmod(0o755)
    target = tmp_path / "cache" / f"jmx-exporter-{version}"

    results = _race(MAVEN_FETCH, str(pom), str(target), str(tmp_path / "logs" / "fetch.log"),
                    env={"PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}"})

    for code, out, err in results:
        assert code == 0, f"{out}\n{err}"
    assert len(runs.read_text().splitlines()) == 1
    assert (target / ".complete").is_file()
    assert (target / jar).stat().st_size == local.stat().st_size
    outputs = [out for _, out, _ in results]
    assert sum("fetching the JMX exporter through Maven" in out for out in outputs) == 1
    assert sum(WAITING in out for out in outputs) == 1


UNPACK = """
import shutil
import sys
import time
from pathlib import Path
from devstack import stack
print("ready", flush=True)
sys.stdin.readline()
tarball, target, runs = (Path(arg) for arg in sys.argv[1:4])

def fetch(download):
    with runs.open("a") as out:
        out.write("fetch\\n")
    download.mkdir(parents=True)
    # As long as a real fetch, near enough: the other start must find the lock taken.
    time.sleep(0.5)
    return Path(shutil.copy(tarball, download))

stack._unpack_once(target, "quarkus-run.jar", fetch, "a fake registry")
"""


def test_two_starts_unpacking_a_tarball_at_once_unpack_it_once_and_both_succeed(tmp_path):
    content = tmp_path / "content"
    files = {"quarkus-run.jar": b"run" * 1000, "lib/main/a.jar": b"a" * 200_000,
             "lib/main/b.jar": b"b" * 200_000, "quarkus/generated-bytecode.jar": b"g" * 50_000}
    for name, data in files.items():
        (content / name).parent.mkdir(parents=True, exist_ok=True)
        (content / name).write_bytes(data)
    tarball = tmp_path / "registry-all.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name in files:
            tar.add(content / name, arcname=name)
    target = tmp_path / "cache" / "registry-1.0" / "app"
    runs = tmp_path / "fetch-runs"

    results = _race(UNPACK, str(tarball), str(target), str(runs))

    for code, out, err in results:
        assert code == 0, f"{out}\n{err}"
    assert len(runs.read_text().splitlines()) == 1
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    # No partial unpack and no download left beside the app.
    assert [p.name for p in target.parent.iterdir()] == ["app"]
    assert sum(WAITING in out for _, out, _ in results) == 1
