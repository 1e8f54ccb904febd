#!/bin/sh
# Prints the machine architecture the container runs on (x86_64, aarch64, ...).
set -eu
echo "hello from $(uname -m)"
