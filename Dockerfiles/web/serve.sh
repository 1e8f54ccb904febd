#!/bin/sh
# busybox httpd is an applet of its own in Debian's busybox (the offline stand-in) and lives in
# `busybox-extras` on Alpine: start whichever this image has, with the arguments given as CMD.
set -eu
if command -v httpd >/dev/null 2>&1; then
    exec httpd "$@"
fi
exec busybox-extras httpd "$@"
