#!/usr/bin/env bash
# Obtain, or renew when it is due, the Let's Encrypt certificate of $DOMAIN (deploy/compose/.env) for the
# production stack, and let the gateway (uid/gid 10001 in its container) read it. Run as root on the host that
# $DOMAIN points to, with port 80 free: certbot answers the HTTP-01 challenge itself (--standalone).
#
# With Debian's certbot installed (apt-get install certbot) it is used, and its renewal timer keeps the
# certificate fresh: the deploy hook recorded here restarts the gateway (which reads the certificate at start)
# after each renewal. Without it, the certbot/certbot image does the same once; run this script again (e.g. from
# a monthly cron job) to renew, and it restarts the gateway when the certificate changed.
#
# `scripts/certbot_certonly.sh --permissions-only` only re-applies the permissions (after a manual certbot run).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/stack_common.sh"

LETSENCRYPT_DIR="${LETSENCRYPT_DIR:-/etc/letsencrypt}"
GATEWAY_GID=10001  # the image's group `icws`, which the gateway runs as

# Certbot keeps live/ and archive/ for root alone (0700) and each private key 0600. Give group 10001 the way
# in and read access to this domain's keys; certbot carries a key's group and group mode over to the keys of
# later renewals, so this is needed once. Other domains' keys stay root's.
grant_gateway_access() {
    local domain="$1"
    [ -d "$LETSENCRYPT_DIR/archive/$domain" ] || stack_die "no certificate for $domain under $LETSENCRYPT_DIR"
    chgrp "$GATEWAY_GID" "$LETSENCRYPT_DIR/live" "$LETSENCRYPT_DIR/archive"
    chmod 0750 "$LETSENCRYPT_DIR/live" "$LETSENCRYPT_DIR/archive"
    chgrp "$GATEWAY_GID" "$LETSENCRYPT_DIR/archive/$domain"/privkey*.pem
    chmod 0640 "$LETSENCRYPT_DIR/archive/$domain"/privkey*.pem
}

stack_load_env production
: "${DOMAIN:?set DOMAIN in $COMPOSE_DIR/.env}"
if [ "${1:-}" = --permissions-only ]; then
    grant_gateway_access "$DOMAIN"
    exit 0
fi
[ $# -eq 0 ] || stack_die "usage: $0 [--permissions-only]"
[ "$(id -u)" = 0 ] || stack_die "run as root (sudo $0): certbot writes $LETSENCRYPT_DIR and listens on port 80"
: "${LETSENCRYPT_EMAIL:?set LETSENCRYPT_EMAIL in $COMPOSE_DIR/.env: expiry notices of the certificate go there}"

certbot_args=(certonly --standalone --non-interactive --agree-tos --keep-until-expiring
    --email "$LETSENCRYPT_EMAIL" --domain "$DOMAIN")
live_cert="$LETSENCRYPT_DIR/live/$DOMAIN/fullchain.pem"
before="$(readlink -f "$live_cert" || true)"
if command -v certbot >/dev/null 2>&1; then
    certbot "${certbot_args[@]}" --config-dir "$LETSENCRYPT_DIR" \
        --deploy-hook "$here/stack_compose.sh production restart gateway"
else
    docker run --rm --name icws-certbot --publish 80:80 --volume "$LETSENCRYPT_DIR:/etc/letsencrypt" \
        certbot/certbot "${certbot_args[@]}"
fi
grant_gateway_access "$DOMAIN"
after="$(readlink -f "$live_cert")"
echo "certificate: $live_cert -> $after"
if [ -n "$before" ] && [ "$before" != "$after" ] && ! command -v certbot >/dev/null 2>&1; then
    # Renewed by the container: no certbot deploy hook ran, so restart the gateway here.
    "$here/stack_compose.sh" production restart gateway
fi
