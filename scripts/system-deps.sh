#!/usr/bin/env bash
# Debian packages the test suite talks to (real peers, reference tools). Idempotent; needs root
# (or sudo) and apt. Skips what is already installed.
set -euo pipefail
packages=(dcmtk dcm2niix dicom3tools orthanc orthanc-dicomweb libgdcm-tools)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
# apt-get update fails at once while another apt holds the lists lock: retry it
for i in $(seq 1 30); do $SUDO apt-get update -qq && break; sleep 5; done
DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
  --no-install-recommends "${missing[@]}" >/dev/null
