#!/bin/sh
# The image's entrypoint: make the gateway's data directory usable, then run `icws-gateway "$@"` as a non-root user.
#
# The data directory (--data-dir, default ./data = /app/data) holds the gateway's identity (key_pair, kept across
# restarts) and its logs (traces/); a bind mount brings it with whatever owner it has on the host.
# - Started as root (the image's default user): give the directory to uid 10001 when anything in it belongs to
#   someone else, then run the gateway as 10001:10001 (setpriv, from util-linux, which Debian always has).
# - Started as any other user (docker run --user, Kubernetes runAsUser): nothing can change owners, so check that
#   this user can write the directories and read everything in them, and otherwise say what to run. Kubernetes gives
#   a volume to the pod's fsGroup: set securityContext.fsGroup (deploy/k8s does).
set -eu

ICWS_UID=10001  # the image's user `icws`
ICWS_GID=10001

fail() {
    echo "icws-gateway: error: $*" >&2
    exit 1
}

# The --data-dir the gateway will use (its own default otherwise), in both spellings argparse accepts.
data_dir=data
previous=
for arg in "$@"; do
    if [ "$previous" = --data-dir ]; then
        data_dir=$arg
    fi
    case $arg in --data-dir=*) data_dir=${arg#--data-dir=} ;; esac
    previous=$arg
done
data_path=$(realpath -m -- "$data_dir")  # for messages: where in the container

if [ "$(id -u)" = 0 ]; then
    mkdir -p -- "$data_dir" || fail "cannot create the data directory $data_path"
    if [ -n "$(find "$data_dir" \( ! -user "$ICWS_UID" -o ! -group "$ICWS_GID" \) -print -quit)" ]; then
        chown -R "$ICWS_UID:$ICWS_GID" -- "$data_dir" || fail "cannot give the data directory $data_path to" \
            "uid $ICWS_UID (a read-only mount, or a file system that refuses chown): run" \
            "'sudo chown -R $ICWS_UID:$ICWS_GID ./data' on the host for the directory mounted there, then start again"
    fi
    exec setpriv --reuid="$ICWS_UID" --regid="$ICWS_GID" --clear-groups -- icws-gateway "$@"
fi

me="$(id -u):$(id -g)"
mkdir -p -- "$data_dir" 2>/dev/null || fail "uid $me cannot create the data directory $data_path: mount a" \
    "directory there that it may write (on the host: 'mkdir -p ./data && sudo chown -R $me ./data')"
# The first file this user cannot read or directory it cannot write (a key file may be read-only: a mounted
# Secret); empty when all is well.
unusable=$(find "$data_dir" \( ! -readable -o \( -type d ! -writable \) \) -print -quit 2>/dev/null) ||
    unusable=${unusable:-$data_dir}
if [ -n "$unusable" ]; then
    fail "uid $me cannot use $(realpath -m -- "$unusable") (owner $(stat -c '%u:%g, mode %a' -- "$unusable")), where" \
        "the gateway keeps its identity (key_pair) and logs. Either run 'sudo chown -R $me ./data' on the host" \
        "for the directory mounted on $data_path, or start the container without --user (as root) to have it" \
        "given to uid $ICWS_UID at start; on Kubernetes, set the pod's securityContext.fsGroup to $(id -g)"
fi
exec icws-gateway "$@"
