#!/usr/bin/env bash
# Installs the Debian packages backupctl drives, only those missing. Idempotent; quiet when all are there.
#
# apt's output goes to a log (its tail is printed when apt fails). Tests run this script with a stub
# apt-get on PATH and point the two system paths below elsewhere:
#   BACKUPCTL_POLICY_RC    the policy-rc.d file that keeps packaged services from starting
#   BACKUPCTL_SYSTEMD_DIR  the folder whose presence means systemd is running
#   BACKUPCTL_APT_LOG      where apt's output is kept
set -euo pipefail

declare -A want=(
  [restic]=restic            # snapshots, dedup, encryption, check, restore
  [storescu]=dcmtk           # independent DICOM client and checker
  [Orthanc]=orthanc          # the real PACS of demo and tests
  [radosgw]=radosgw          # single-node Ceph RGW: a production S3 with Object Lock, for tests
  [ceph-mon]=ceph-mon
  [ceph-osd]=ceph-osd
  [ceph]=ceph-common
  [curl]=curl
  [openssl]=openssl
  [/usr/bin/time]=time       # GNU time: peak RSS of restic in the benchmarks
  [chromium]=chromium        # prints drill reports to PDF; opens them in tests
  [pdftotext]=poppler-utils  # tests read the drill report's PDF
  [rsyslogd]="rsyslog rsyslog-gnutls"   # the syslog-over-TLS receiver of the audit forwarding tests
  [groff]=groff-base         # renders `backupctl man` in its test
  [/usr/lib/postgresql/15/bin/pg_ctl]=postgresql   # the PostgreSQL index of a production-like Orthanc
  [/usr/share/doc/orthanc-postgresql/copyright]=orthanc-postgresql   # a plugin: no command of its own
)
missing=()
for bin in "${!want[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || { [[ $bin == /* ]] && [ -e "$bin" ]; } || {
    read -ra pkgs <<<"${want[$bin]}"   # a value may name several packages
    missing+=("${pkgs[@]}")
  }
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
policy=${BACKUPCTL_POLICY_RC:-/usr/sbin/policy-rc.d}
systemd_dir=${BACKUPCTL_SYSTEMD_DIR:-/run/systemd/system}
log=${BACKUPCTL_APT_LOG:-${TMPDIR:-/tmp}/backupctl-apt.log}
echo "install-system-deps: installing ${missing[*]} (apt's output: $log)" >&2

# Debian starts services on install where systemd runs; the tests and demo start their own Orthanc
# on loopback, so keep the packaged one from starting (policy-rc.d 101 = action forbidden). A policy
# file that was already there is the machine's own: leave it as it is.
created_policy=0
cleanup() {
  if [ "$created_policy" = 1 ]; then
    $sudo rm -f "$policy"
  fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  created_policy=1
  $sudo chmod 755 "$policy"
fi

apt() {
  if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get "$@" >>"$log" 2>&1; then
    echo "install-system-deps: apt-get $1 failed; the end of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
  fi
}
: >"$log"
apt update -qq
apt install -y -qq --no-install-recommends "${missing[@]}"
if command -v systemctl >/dev/null 2>&1 && [ -d "$systemd_dir" ]; then
  $sudo systemctl disable --now orthanc >>"$log" 2>&1 || true
fi
exit 0
