# Sourced by the stack scripts (stack_compose.sh, stack_start.sh, stack_stop.sh, certbot_certonly.sh): which
# compose files and settings make a stack, and how to run Docker Compose on them.
# Settings: deploy/compose/.env (copy .env.example), or the file named by $ENV_FILE.

COMPOSE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../deploy/compose" && pwd)"

stack_die() {
    echo "$(basename "$0"): error: $*" >&2
    exit 1
}

# stack_env_file STACK: the settings file; the local stack runs on .env.example's defaults when .env is missing.
stack_env_file() {
    local file="${ENV_FILE:-$COMPOSE_DIR/.env}"
    if [ -f "$file" ]; then
        echo "$file"
    elif [ "$1" = local ] && [ -z "${ENV_FILE:-}" ]; then
        echo "$COMPOSE_DIR/.env.example"
    else
        stack_die "$file is missing: cp $COMPOSE_DIR/.env.example $COMPOSE_DIR/.env, then set DOMAIN and the passwords"
    fi
}

# stack_load_env STACK: export the stack's settings into this shell.
stack_load_env() {
    local file
    file="$(stack_env_file "$1")"
    set -a
    # shellcheck source=/dev/null
    . "$file"
    set +a
}

# stack_compose STACK COMMAND [ARGS...]: Docker Compose (the `docker compose` plugin, or Debian's
# docker-compose) on the base file and the STACK's override (local or production).
stack_compose() {
    local stack="$1" override env_file
    shift
    case "$stack" in
        local) override=docker-compose.local.yml ;;
        production) override=docker-compose.prod.yml ;;
        *) stack_die "unknown stack '$stack': local or production" ;;
    esac
    env_file="$(stack_env_file "$stack")"
    local compose
    if docker compose version >/dev/null 2>&1; then
        compose=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        compose=(docker-compose)
    else
        stack_die "Docker Compose is not installed: the docker compose plugin, or apt-get install docker-compose"
    fi
    "${compose[@]}" --env-file "$env_file" -f "$COMPOSE_DIR/docker-compose.yml" -f "$COMPOSE_DIR/$override" "$@"
}
