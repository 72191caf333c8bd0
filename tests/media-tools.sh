#!/usr/bin/env bash
# Installs the programs the extraction and transcription tests use when they
# are missing: poppler's pdftotext, which flowrun runs to read PDFs,
# espeak-ng, which makes the test audio, and flac and lame, which encode
# it. All come from Debian's packages.
#
#   bash tests/media-tools.sh
set -euo pipefail

missing=()
command -v pdftotext >/dev/null || missing+=(poppler-utils)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v flac >/dev/null || missing+=(flac)
command -v lame >/dev/null || missing+=(lame)
((${#missing[@]} == 0)) && exit 0

if command -v flock >/dev/null; then
  mkdir -p "$(dirname "$0")/../target"
  exec 9>"$(dirname "$0")/../target/media-tools.lock"
  flock 9
  missing=()
  command -v pdftotext >/dev/null || missing+=(poppler-utils)
  command -v espeak-ng >/dev/null || missing+=(espeak-ng)
  command -v flac >/dev/null || missing+=(flac)
  command -v lame >/dev/null || missing+=(lame)
command -v lame >/dev/null || missing+=(lame)
command -v flac >/dev/null || missing+=(flac)
command -v lame >/dev/null || missing+=(lame)
  ((${#missing[@]} == 0)) && exit 0
fi
sudo=()
((EUID == 0)) || sudo=(sudo)
printf 'media-tools: installing %s with apt-get\n' "${missing[*]}" >&2
"${sudo[@]}" apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
