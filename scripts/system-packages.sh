#!/usr/bin/env bash
# The Debian packages the project needs on the machine, installed when they are missing:
#   bash scripts/system-packages.sh            # what `make demo` and the local stack need
#   bash scripts/system-packages.sh --tests    # the same, plus what only the tests need (Chromium)
# `make install` runs the first form and `make test` and `.ci/run` the second, so the README's two
# commands set a fresh machine up alike. As root with apt-get the missing packages are installed;
# otherwise the script names them in one sentence and exits 1. Nothing is done when all are there.
set -euo pipefail

with_tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) with_tests=1 ;;
    *) echo "system-packages.sh: unknown argument $arg (only --tests)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
need=()
command -v make >/dev/null || need+=(make)
command -v mvn >/dev/null || need+=(maven)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
# javac: devstack.flink builds the CTR job's table format (flink/format) with Maven.
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
"$python" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# The ingestion's C codec (native/) is compiled by `make install`.
command -v gcc >/dev/null || need+=(gcc)
"$python" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  2>/dev/null || need+=(python3-dev)
if [ "$with_tests" -eq 1 ]; then
  # The browser test of Airflow's UI drives Debian's headless Chromium.
  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || need+=(chromium)
fi
# Prometheus, its Pushgateway, PostgreSQL and Redis: the local stack runs them as its own processes
# (devstack), so Debian's system daemons of the same must not run.
need_daemons=()
command -v prometheus >/dev/null || need_daemons+=(prometheus)
command -v prometheus-pushgateway >/dev/null || need_daemons+=(prometheus-pushgateway)
# Redis: the broker of Airflow's Celery workers (AIRFLOW_EXECUTOR=celery).
command -v redis-server >/dev/null || need_daemons+=(redis-server)
# devstack runs the newest server under /usr/lib/postgresql (psql and pg_isready come with it).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_daemons+=(postgresql)

all=("${need[@]}" "${need_daemons[@]}")
[ ${#all[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "this project needs Debian's packages ${all[*]}, which are not installed; install them as root" \
       "with \`sudo bash scripts/system-packages.sh$([ "$with_tests" -eq 1 ] && echo ' --tests')\`" \
       "(or apt-get install ${all[*]}) and run the command again" >&2
  exit 1
fi

# apt's own output goes to a log, shown only when it fails.
apt_log=$(mktemp "${TMPDIR:-/tmp}/system-packages.XXXXXX.log")
apt() {
  DEBIAN_FRONTEND=noninteractive apt-get "$@" >>"$apt_log" 2>&1 \
    || { status=$?; tail -n 20 "$apt_log" >&2; echo "apt-get $1 failed (exit $status); its log is $apt_log" >&2; return "$status"; }
}
apt update
if [ ${#need[@]} -gt 0 ]; then
  echo "system packages: installing ${need[*]} from Debian's packages"
  apt install -y "${need[@]}"
fi
if [ ${#need_daemons[@]} -gt 0 ]; then
  # Debian's packages start (and enable) them as system daemons on 9090, 9091, 5432 and 6379, the
  # ports the stack's own Prometheus, Pushgateway, PostgreSQL and Redis take: install them under a policy-rc.d
  # that forbids starting services, then stop and disable whatever started anyway. Without
  # recommends, as prometheus recommends node-exporter, one more daemon.
  echo "system packages: installing ${need_daemons[*]} from Debian's packages (not as daemons)"
  if [[ " ${need_daemons[*]} " == *" postgresql "* ]]; then
    # Nor a cluster of Debian's: postgresql would create "main" on 5432 and start it at boot. This
    # stays for later upgrades (a new major version would create one again).
    mkdir -p /etc/postgresql-common/createcluster.d
    printf '# devstack runs a PostgreSQL cluster of its own (scripts/system-packages.sh)\ncreate_main_cluster = false\n' \
      > /etc/postgresql-common/createcluster.d/devstack.conf
  fi
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=/usr/sbin/policy-rc.d
  fi
  installed=0
  apt install -y --no-install-recommends "${need_daemons[@]}" || installed=$?
  if [ -n "$own_policy" ]; then rm -f "$own_policy"; fi
  [ "$installed" -eq 0 ] || exit "$installed"
  for daemon in prometheus prometheus-pushgateway postgresql redis-server; do
    if [ -d /run/systemd/system ]; then
      systemctl disable --now "$daemon" >/dev/null 2>&1 || true
    else
      service "$daemon" stop >/dev/null 2>&1 || true
    fi
  done
fi
rm -f "$apt_log"
