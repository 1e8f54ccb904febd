#!/usr/bin/env bash
# The plain way to do what `pipeline release` does, as the benchmark's baseline: log in, build both
# platforms once and push them to two registries, then pull and run each platform from each registry.
# No gate: the tag is pushed before anything ran the image, which is exactly what the pipeline avoids.
#
# usage: baseline_release.sh CONTEXT BASE_IMAGE FIRST_REPOSITORY SECOND_REPOSITORY TAG
# The second registry's credentials come from BASELINE_USER and BASELINE_TOKEN (the token on stdin).
set -euo pipefail

if [ "$#" -ne 5 ]; then
    echo "usage: $0 CONTEXT BASE_IMAGE FIRST_REPOSITORY SECOND_REPOSITORY TAG" >&2
    exit 2
fi
context=$1
base=$2
first=$3
second=$4
tag=$5

printf '%s' "${BASELINE_TOKEN:?set BASELINE_TOKEN}" |
    docker login --username "${BASELINE_USER:?set BASELINE_USER}" --password-stdin "${second%%/*}" >/dev/null

docker buildx build --quiet \
    --platform linux/amd64,linux/arm64 \
    --build-arg "BASE=${base}" \
    --tag "${first}:${tag}" \
    --tag "${second}:${tag}" \
    --push \
    "${context}" >/dev/null

for reference in "${first}:${tag}" "${second}:${tag}"; do
    for platform in linux/amd64 linux/arm64; do
        docker run --rm --pull always --platform "${platform}" "${reference}"
    done
done
