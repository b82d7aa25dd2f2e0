#!/usr/bin/env bash
# Build the image and start a stack in the background: scripts/stack_start.sh local|production
# (deploy/compose/docker-compose*.yml say what each runs and where it listens).
set -euo pipefail
. "$(dirname "$0")/stack_common.sh"
[ $# -eq 1 ] || stack_die "usage: $0 local|production"
stack="$1"
if [ "$stack" = production ]; then
    stack_load_env production
    cert="/etc/letsencrypt/live/${DOMAIN:?set DOMAIN in $COMPOSE_DIR/.env}/fullchain.pem"
    [ -e "$cert" ] || stack_die "no certificate for $DOMAIN ($cert): run sudo scripts/certbot_certonly.sh first"
fi
stack_compose "$stack" build
stack_compose "$stack" up -d
stack_compose "$stack" ps
