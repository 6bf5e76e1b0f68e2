#!/bin/sh
# Usage: certificate-expiry-metrics OUTPUT.prom GLOB...
# Writes openpolicy_certificate_expiry_timestamp_seconds{path} (the notAfter of each PEM
# certificate the globs match) for node_exporter's textfile collector, atomically.
set -eu
out="$1"
shift
tmp="$out.$$"
{
  echo "# HELP openpolicy_certificate_expiry_timestamp_seconds Unix time a certificate the toolkit made expires."
  echo "# TYPE openpolicy_certificate_expiry_timestamp_seconds gauge"
  for pattern in "$@"; do
    for file in $pattern; do
      [ -f "$file" ] || continue
      end=$(openssl x509 -noout -enddate -in "$file" 2>/dev/null | cut -d= -f2) || continue
      [ -n "$end" ] || continue
      echo "openpolicy_certificate_expiry_timestamp_seconds{path=\"$file\"} $(date -d "$end" +%s)"
    done
  done
} >"$tmp"
chmod 0644 "$tmp"
mv "$tmp" "$out"
