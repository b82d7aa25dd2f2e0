#!/usr/bin/env bash
# Stop a stack: scripts/stack_stop.sh local|production. The gateway drains (its clients get close code 1001);
# its identity (deploy/compose/data), Prometheus' and Grafana's volumes are kept for the next start.
set -euo pipefail
. "$(dirname "$0")/stack_common.sh"
[ $# -eq 1 ] || stack_die "usage: $0 local|production"
stack_compose "$1" down
