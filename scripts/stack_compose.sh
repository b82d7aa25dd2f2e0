#!/usr/bin/env bash
# Docker Compose on one stack: scripts/stack_compose.sh local|production COMMAND [ARGS...]
# e.g. `scripts/stack_compose.sh production logs -f gateway`, `scripts/stack_compose.sh local config`.
set -euo pipefail
. "$(dirname "$0")/stack_common.sh"
[ $# -ge 2 ] || stack_die "usage: $0 local|production COMMAND [ARGS...]"
stack_compose "$@"
