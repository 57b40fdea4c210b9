#!/usr/bin/env bash
# Installs the Debian packages backupctl drives, only those missing. Idempotent; quiet when all are there.
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
  [chromium]=chromium        # opens drill reports in tests
)
missing=()
for bin in "${!want[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing+=("${want[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-system-deps: installing ${missing[*]}" >&2
# Debian starts services on install where systemd runs; the tests and demo start their own Orthanc
# on loopback, so keep the packaged one from starting (policy-rc.d 101 = action forbidden).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod 755 "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" = 1 ] && $sudo rm -f "$policy"; }
trap cleanup EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now orthanc >/dev/null 2>&1 || true
fi
