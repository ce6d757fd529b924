#!/usr/bin/env bash
# Debian packages the test suite talks to (real peers, reference tools), then a check that every
# command the tests run is there: a missing tool fails here, not as a quietly skipped test.
# Idempotent; needs root (or sudo) and apt. Skips what is already installed.
#   bash scripts/system-deps.sh            the test peers and tools
#   bash scripts/system-deps.sh PKG...     only these packages (e.g. python3-venv), no check
set -euo pipefail
if [ $# -gt 0 ]; then packages=("$@"); else
  packages=(dcmtk dcm2niix dicom3tools orthanc orthanc-dicomweb libgdcm-tools
            tesseract-ocr tesseract-ocr-eng fonts-dejavu-core chromium)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # apt-get update fails at once while another apt holds the lists lock: retry it
  for i in $(seq 1 30); do $SUDO apt-get update -qq && break; sleep 5; done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi
[ $# -gt 0 ] && exit 0
# what the tests call: DCMTK tools and peers, dicom3tools, dcm2niix, Orthanc and its plugin, GDCM,
# Tesseract (Clean Pixel Data's OCR) with its English data, the DejaVu fonts of the OCR tests, and
# Chromium (headless, driven by Playwright: serve's browse page, OHIF opening dicomflow's DICOMweb)
absent=()
for c in dcmdump dcmdrle dcmdjpls dcmdjpeg dcmgpdir dcmqrscp storescu storescp getscu movescu findscu \
         dciodvfy dcm2niix Orthanc gdcmconv tesseract chromium; do
  command -v "$c" >/dev/null || absent+=("$c")
done
[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || absent+=(libOrthancDicomWeb.so)
tesseract --list-langs 2>/dev/null | grep -qx eng || absent+=(tesseract-ocr-eng)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || absent+=(DejaVuSans.ttf)
if [ ${#absent[@]} -gt 0 ]; then
  echo "system-deps: installed, but still missing: ${absent[*]}" >&2
  exit 1
fi
