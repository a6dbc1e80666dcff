#!/usr/bin/env bash
# System packages the end-to-end tests use: the Prometheus server and promtool (Debian package
# `prometheus`). Java 17 and Maven run the Kafka broker and are expected on the machine.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install the Debian package 'prometheus' (sudo apt-get install prometheus) or run as root" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a system service where systemd runs; the tests start their own server.
(service prometheus stop || true) >/dev/null 2>&1
