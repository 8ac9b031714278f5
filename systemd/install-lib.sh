# Shared by install-pi.sh and install-dock.sh (sourced, not run).
#
# Every step is printed before it is done: "== what" for a step, "+ command" for
# each command. With --dry-run the commands are only printed. With --root DIR
# every path is under DIR and nothing touches the running system: package
# installs, the venv and service starts are skipped (said so), units are enabled
# with `systemctl --root` and users made with `systemd-sysusers --root`.
# Configuration that is already there is never overwritten.

set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # the checkout being installed
DRY_RUN=0
ROOT=""
WITH_VENV=""     # default: yes on a live system, no under --root

say()  { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die()  { printf 'error: %s\n' "$*" >&2; exit 2; }
run()  { printf '+ %s\n' "$*"; [ "$DRY_RUN" = 1 ] || "$@"; }
at()   { printf '%s%s' "$ROOT" "$1"; }      # a system path, under --root if given
live() { [ -z "$ROOT" ]; }                   # acting on the running system?

# The systemctl / systemd-sysusers options that point at ROOT.
root_opt() { if live; then :; else printf -- '--root=%s' "$ROOT"; fi; }

# parse_common "$@": the options both scripts take; the rest are left in REST.
parse_common() {
  REST=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --dry-run) DRY_RUN=1 ;;
      --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$(realpath -m "$2"); shift ;;
      --root=*) ROOT=$(realpath -m "${1#--root=}") ;;
      --with-venv) WITH_VENV=1 ;;
      --no-venv) WITH_VENV=0 ;;
      *) REST+=("$1") ;;
    esac
    shift
  done
  [ -n "$WITH_VENV" ] || { if live; then WITH_VENV=1; else WITH_VENV=0; fi; }
  if live && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or with --dry-run, or --root DIR)"
  fi
}

# install_file SRC DEST MODE: install (or replace) a file the project owns.
install_file() {
  run install -D -m "$3" "$1" "$(at "$2")"
}

# install_config SRC DEST MODE: a file the unit may have edited: kept if present.
install_config() {
  if [ -e "$(at "$2")" ]; then
    note "keeping the existing $2"
  else
    run install -D -m "$3" "$1" "$(at "$2")"
  fi
}

# ensure_line FILE LINE: append LINE to FILE unless it is there already.
ensure_line() {
  local file; file=$(at "$1")
  if [ -e "$file" ] && grep -qxF -- "$2" "$file"; then
    note "$1 already has: $2"
  else
    printf '+ append to %s: %s\n' "$1" "$2"
    [ "$DRY_RUN" = 1 ] || { mkdir -p "$(dirname "$file")"; printf '%s\n' "$2" >>"$file"; }
  fi
}

apt_install() {
  if live; then
    run apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  else
    note "skipped under --root (not the running system): apt-get install $*"
  fi
}

# copy_code DEST: the checkout, without its git history, venv or run output.
copy_code() {
  local dest; dest=$(at "$1")
  run mkdir -p "$dest"
  printf '+ tar -C %s ... | tar -C %s -x\n' "$SRC" "$dest"
  [ "$DRY_RUN" = 1 ] || tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./demo-out \
      --exclude='__pycache__' --exclude='*.egg-info' --exclude=./.pytest_cache -cf - . \
    | tar -C "$dest" -xf -
}

# make_venv DIR EXTRAS [VENV_OPTION...]: the venv the units run custody from.
make_venv() {
  local dir=$1 extras=$2; shift 2
  if [ "$WITH_VENV" = 1 ]; then
    run python3 -m venv "$@" "$(at "$dir")/.venv"
    run "$(at "$dir")/.venv/bin/pip" install -q "$(at "$dir")$extras"
    run "$(at "$dir")/.venv/bin/python" -m device.prompts build "$(at "$dir")/.venv/share/custody/prompts"
  else
    note "skipped (--no-venv, or --root without --with-venv): the venv in $dir/.venv"
  fi
}

# id_of passwd|group NAME: NAME's numeric id in the target system (under --root too,
# where the name means nothing to the running system's chown).
id_of() {
  if [ "$2" = root ]; then echo 0; else awk -F: -v n="$2" '$1 == n { print $3 }' "$(at "/etc/$1")" 2>/dev/null || true; fi
}

# own_by USER GROUP PATH...: chown, by the ids USER and GROUP have in the target system
# (root is 0). Under --dry-run the users may not exist yet: printed by name.
own_by() {
  local user=$1 group=$2 uid gid; shift 2
  uid=$(id_of passwd "$user"); gid=$(id_of group "$group")
  if [ "$DRY_RUN" = 1 ]; then
    run chown "$user:$group" "$@"
  else
    [ -n "$uid" ] || die "no user $user in $(at /etc/passwd)"
    [ -n "$gid" ] || die "no group $group in $(at /etc/group)"
    printf '+ chown %s:%s (%s:%s) %s\n' "$user" "$group" "$uid" "$gid" "$*"
    chown "$uid:$gid" "$@"
  fi
}

make_users() {
  install_file "$1" "/usr/lib/sysusers.d/$(basename "$1" .sysusers).conf" 0644
  live || run mkdir -p "$(at /etc)"
  # shellcheck disable=SC2046
  run systemd-sysusers $(root_opt) "$(at "/usr/lib/sysusers.d/$(basename "$1" .sysusers).conf")"
}

enable_units() {
  # shellcheck disable=SC2046
  live && run systemctl daemon-reload
  run systemctl $(root_opt) enable "$@"
}

start_units() {
  if live; then run systemctl restart "$@"; else note "skipped under --root: systemctl restart $*"; fi
}
