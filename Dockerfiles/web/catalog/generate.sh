#!/bin/sh
# Renders the parts catalog: one page per row of the CSV, an index, and a gzip -9 copy of each page that
# busybox httpd sends to clients accepting gzip. Only busybox tools, so it runs on the offline base too.
# Usage: generate.sh PARTS.csv OUTDIR
set -eu
csv=$1
out=$2
mkdir -p "$out"
index="$out/index.html"
{
  echo '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Parts catalog</title>'
  echo '<link rel="stylesheet" href="/style.css"></head><body><h1>Parts catalog</h1><ul>'
} >"$index"
tail -n +2 "$csv" | while IFS=, read -r id name material size price; do
  euros=$((price / 100)).$(printf '%02d' $((price % 100)))
  cat >"$out/$id.html" <<PAGE
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>$id $name</title><link rel="stylesheet" href="/style.css"></head>
<body><p><a href="/parts/">All parts</a></p><h1>$name</h1>
<table><tr><th>Part</th><td>$id</td></tr><tr><th>Material</th><td>$material</td></tr>
<tr><th>Size</th><td>$size mm</td></tr><tr><th>Price</th><td>EUR $euros</td></tr></table></body></html>
PAGE
  echo "<li><a href=\"/parts/$id.html\">$id</a> $name ($material, $size mm)</li>" >>"$index"
  gzip -9 -k "$out/$id.html"
done
echo '</ul></body></html>' >>"$index"
gzip -9 -k "$index"
# A manifest of checksums lets the smoke test and humans see exactly which pages shipped.
(cd "$out" && sha256sum ./*.html >SHA256SUMS)
