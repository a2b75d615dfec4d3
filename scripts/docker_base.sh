#!/usr/bin/env bash
# Make a Debian bookworm base image with Python 3.11, pulling nothing from an image registry:
# debootstrap a minimal root file system (from Debian's archive) and `docker import` it.
#   scripts/docker_base.sh [NAME]        (as root; default NAME: fracture-detector-base:bookworm)
# The Dockerfile takes it as --build-arg BASE_IMAGE=NAME in place of python:3.11-slim.
set -euo pipefail
name=${1:-fracture-detector-base:bookworm}
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
    http://deb.debian.org/debian > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
rm -rf "$rootfs".log "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$name" > /dev/null
echo "$name"
