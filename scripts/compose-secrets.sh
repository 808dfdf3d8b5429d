#!/usr/bin/env bash
# Write the compose stack's secrets (docker-compose.airflow.yml refuses to start without them) to
# .env beside it: a random value for each one not set yet, none changed, the file readable by its
# owner only. Run it once before `docker compose -f docker-compose.airflow.yml up`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_file="${COMPOSE_ENV_FILE:-$root/.env}"
python="${PYTHON:-python3}"

umask 077
touch "$env_file"
chmod 600 "$env_file"
added=()
for name in AIRFLOW_ADMIN_PASSWORD AIRFLOW_DB_PASSWORD AIRFLOW_FERNET_KEY AIRFLOW_JWT_SECRET \
            AIRFLOW_API_SECRET_KEY MINIO_ROOT_PASSWORD CTR_DB_PASSWORD REDIS_PASSWORD; do
  if grep -q "^$name=" "$env_file"; then
    continue
  fi
  if [ "$name" = AIRFLOW_FERNET_KEY ]; then
    # A Fernet key is 32 random bytes, URL-safe base64.
    value="$("$python" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
  else
    # URL-safe characters only: several of these go inside database URLs.
    value="$("$python" -c 'import secrets; print(secrets.token_urlsafe(24))')"
  fi
  printf '%s=%s\n' "$name" "$value" >> "$env_file"
  added+=("$name")
done
if [ ${#added[@]} -eq 0 ]; then
  echo "every secret is already in $env_file; nothing changed"
else
  echo "wrote ${#added[@]} secret(s) to $env_file (mode 0600): ${added[*]}"
fi
echo "the UI user is admin; its password is AIRFLOW_ADMIN_PASSWORD in $env_file"
