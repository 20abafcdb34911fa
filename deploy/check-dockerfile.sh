#!/usr/bin/env bash
# Perform the Dockerfile's steps without Docker, and the README quickstart against the result.
#
# No Docker daemon runs where the tests do, so this is how the Dockerfile is exercised
# (docs/deployment.md): build the wheel from the source tree as the build stage does, install
# it with the [postgres] extra into a fresh venv owned by root, create a throwaway system user
# without a login shell, start `artifactd serve` as that user with the Dockerfile's ENV
# settings (data dir and port moved to a temporary place), wait for /healthz as the
# HEALTHCHECK does, create an API token as `docker exec` would, then create a repo, push a
# commit and clone it back with curl and git.
#
# Needs root (useradd, setpriv), git, curl, jq. Usage: deploy/check-dockerfile.sh [--keep]
set -euo pipefail
umask 022  # as in an image: the user must be able to read and run what root installed

repo_root=$(cd "$(dirname "$0")/.." && pwd)
dockerfile="$repo_root/Dockerfile"
python=${PYTHON:-python3}  # builds the wheel; the venv's interpreter is chosen below
keep=0
[[ ${1:-} == --keep ]] && keep=1

say() { printf 'check-dockerfile: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

[[ $(id -u) == 0 ]] || fail "run as root (it creates a throwaway user)"
for tool in git curl jq useradd userdel setpriv pgrep; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

work=$(mktemp -d /tmp/artifactd-dockerfile-check.XXXXXX)
chmod 755 "$work"
user="artd-check-$$"
server_pid=""

cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  # Anything the user still runs (a stray git child) goes, by pid, before the user does.
  local left
  left=$(pgrep -u "$user" 2>/dev/null || true)
  if [[ -n $left ]]; then kill -KILL $left 2>/dev/null || true; fi
  userdel "$user" 2>/dev/null || true
  if ((keep)); then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# The Dockerfile's ENV lines (one setting per line), so that the check runs its settings.
declare -A docker_env=()
while IFS= read -r line; do
  [[ $line =~ ^ENV[[:space:]]+([A-Z_]+)=(.*)$ ]] || continue
  docker_env[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done <"$dockerfile"
[[ ${docker_env[ARTIFACTD_HOST]:-} == 0.0.0.0 ]] || fail "the Dockerfile must listen on 0.0.0.0"
[[ -n ${docker_env[ARTIFACTD_PUBLIC_URL]:-} ]] || fail "the Dockerfile must set ARTIFACTD_PUBLIC_URL"
grep -q '^USER artifactd$' "$dockerfile" || fail "the Dockerfile must run as the artifactd user"

say "build stage: pip wheel (from a copy of the build context)"
mkdir -p "$work/src" "$work/wheels"
cp "$repo_root/pyproject.toml" "$repo_root/README.md" "$repo_root/LICENSE" "$work/src/"
cp -r "$repo_root/src" "$work/src/src"
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
quiet() { "$@" >"$work/step.log" 2>&1 || { cat "$work/step.log" >&2; fail "$*"; }; }
quiet "$python" -m pip wheel --no-cache-dir --no-deps --wheel-dir "$work/wheels" "$work/src"

say "a throwaway non-root user owns the data dir"
useradd --system --user-group --no-create-home --home-dir "$work/data" --shell /usr/sbin/nologin "$user"
mkdir -p "$work/data"
chown "$user:$user" "$work/data"
chmod 750 "$work/data"
# What `USER artifactd` does: the user's ids, no supplementary groups of root, no fork.
as_user=(setpriv --reuid="$user" --regid="$user" --init-groups --)

# The venv's interpreter must be one that user may run (a pyenv under /root is not), as the
# image's /usr/local/bin/python3 is: the first candidate that works as the user.
venv_python=""
for candidate in ${VENV_PYTHON:-} /usr/local/bin/python3 /usr/bin/python3 "$(command -v python3)"; do
  [[ -x $candidate ]] || continue
  if "${as_user[@]}" "$candidate" -c \
      'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    venv_python=$candidate
    break
  fi
done
[[ -n $venv_python ]] || fail "no Python >= 3.11 with venv that $user may run (set VENV_PYTHON)"

say "run stage: a fresh venv owned by root ($venv_python), the wheel with [postgres]"
quiet "$venv_python" -m venv "$work/venv"
wheel=$(ls "$work"/wheels/artifactd-*.whl)
quiet "$work/venv/bin/pip" install --disable-pip-version-check "$wheel[postgres]"
"$work/venv/bin/python" -c 'import psycopg, artifactd' || fail "the installed wheel does not import"
[[ -x $work/venv/bin/git-credential-artifactd ]] || fail "the wheel lacks the git-credential-artifactd script"


port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run_env=(env -i "PATH=$work/venv/bin:/usr/local/bin:/usr/bin:/bin" "HOME=$work/data" "LANG=C.UTF-8")
for key in "${!docker_env[@]}"; do
  [[ $key == PATH ]] && continue
  run_env+=("$key=${docker_env[$key]}")
done
run_env+=("ARTIFACTD_DATA_DIR=$work/data" "ARTIFACTD_PORT=$port" "ARTIFACTD_PUBLIC_URL=http://127.0.0.1:$port")

say "artifactd serve as $user on 0.0.0.0:$port"
(cd "$work/data" && exec "${as_user[@]}" "${run_env[@]}" artifactd serve) >"$work/serve.log" 2>&1 &
server_pid=$!  # setpriv and env exec: this is the server's own pid

base="http://127.0.0.1:$port"
healthy=""
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; fail "the server exited"; }
  status=$(curl -s -o /dev/null -w '%{http_code}' "$base/healthz" || true)
  if [[ $status == 200 ]]; then healthy=healthz; break; fi
  # Before /healthz existed the server answered 404 there: it is up, but say so.
  if [[ $status == 404 ]]; then healthy=up; break; fi
  sleep 0.1
done
[[ -n $healthy ]] || { cat "$work/serve.log" >&2; fail "no answer on $base within 30 s"; }
[[ $healthy == healthz ]] || say "warning: $base/healthz answered 404 (the HEALTHCHECK needs it)"
owner=$(stat -c %U "$work/data/artifactd.db" 2>/dev/null || echo none)
[[ $owner == "$user" ]] || fail "the database is owned by $owner, not $user"

say "api-token create (as docker exec would, as the same user)"
token_json=$("${as_user[@]}" "${run_env[@]}" artifactd api-token create --json)
ACCOUNT_ID=$(jq -r .account_id <<<"$token_json")
API_TOKEN=$(jq -r .token <<<"$token_json")
ns_url="$base/client/v4/accounts/$ACCOUNT_ID/artifacts/namespaces/default"

say "quickstart: create a repo, push a commit, clone it back"
created=$(curl -s --fail-with-body -X POST "$ns_url/repos" \
  -H "Authorization: Bearer $API_TOKEN" -H "Content-Type: application/json" \
  --data '{"name":"starter-repo"}')
remote=$(jq -r .result.remote <<<"$created")
repo_token=$(jq -r .result.token <<<"$created")
[[ $remote == "$base/git/$ACCOUNT_ID/default/starter-repo.git" ]] || fail "unexpected remote $remote"

export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null GIT_TERMINAL_PROMPT=0
git_id=(-c user.name=Check -c user.email=check@example.com -c init.defaultBranch=main)
mkdir "$work/demo"
git -C "$work/demo" "${git_id[@]}" init -q -b main
printf '# Artifacts demo\n' >"$work/demo/README.md"
git -C "$work/demo" add README.md
git -C "$work/demo" "${git_id[@]}" commit -q -m "Initial commit"
git -C "$work/demo" -c http.extraHeader="Authorization: Bearer $repo_token" push -q "$remote" main
git -c http.extraHeader="Authorization: Bearer $repo_token" clone -q "$remote" "$work/clone"
[[ $(cat "$work/clone/README.md") == "# Artifacts demo" ]] || fail "the clone has other content"
[[ $(git -C "$work/clone" log -1 --format=%s) == "Initial commit" ]] || fail "the clone has another commit"

repos_owner=$(find "$work/data" -name '*.git' -type d -print -quit | xargs -r stat -c %U)
[[ $repos_owner == "$user" ]] || fail "the bare repos are owned by ${repos_owner:-nobody}, not $user"

say "stopping the server (SIGTERM, as docker stop does)"
kill -TERM "$server_pid"
for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$server_pid" 2>/dev/null || fail "the server did not stop within 30 s of SIGTERM"
wait "$server_pid" 2>/dev/null || true
server_pid=""
left=$(pgrep -u "$user" || true)
[[ -z $left ]] || fail "processes of $user outlived the server: $left"

say "OK: wheel built, installed in a fresh venv, served by a non-root user; create + push + clone work"
