#!/bin/sh
# The cwfs image's entrypoint: one `cwfs mount --foreground`, as the container's main process.
#
#   CWFS_BUCKET        the bucket to mount (required)
#   CWFS_MOUNTPOINT    where to mount it (required); created when missing
#   arguments          passed on to `cwfs mount` (e.g. --lota on --unmount-timeout 60)
#   CWFS_<OPTION>      any other cwfs option, read by cwfs itself (docs/configuration.md)
#
# cwfs is exec'd, so it is the process Kubernetes signals: SIGTERM unmounts it cleanly.
# A mount point left dead by a previous container (its cwfs was killed: stat fails with
# "Transport endpoint is not connected") is unmounted first, or cwfs could not mount there.
#
# `cwfs-entrypoint.sh check` exits 0 when a cwfs mount is on CWFS_MOUNTPOINT and answers
# (for startup and readiness probes), 1 otherwise.
set -eu

fail() {
    echo "cwfs-entrypoint: $*" >&2
    exit 2
}

# Whether the mount table lists a cwfs mount on $1, and a stat of it is answered.
mounted() {
    awk -v dir="$1" '$2 == dir && $3 == "fuse.cwfs" { found = 1 } END { exit !found }' \
        /proc/self/mounts && stat -- "$1" >/dev/null 2>&1
}

# Unmount $1 when it is a FUSE mount whose process is gone.
clear_dead_mount() {
    error=$(LC_ALL=C stat -- "$1" 2>&1 >/dev/null) || true
    case "$error" in
    *"Transport endpoint is not connected"* | *"Software caused connection abort"*)
        echo "cwfs-entrypoint: $1 is a dead FUSE mount (its process is gone): unmounting it" >&2
        fusermount3 -u "$1" || fusermount3 -uz "$1" || fail "cannot unmount the dead mount $1"
        ;;
    esac
}

[ -n "${CWFS_MOUNTPOINT:-}" ] || fail "set CWFS_MOUNTPOINT to the directory to mount on"
if [ "${1:-}" = check ]; then
    mounted "$CWFS_MOUNTPOINT" || exit 1
    exit 0
fi
[ -n "${CWFS_BUCKET:-}" ] || fail "set CWFS_BUCKET to the bucket to mount"
clear_dead_mount "$CWFS_MOUNTPOINT"
mkdir -p -- "$CWFS_MOUNTPOINT"
exec cwfs mount "$CWFS_BUCKET" "$CWFS_MOUNTPOINT" --foreground "$@"
