#!/usr/bin/env bash
# Install the Custody dock on Debian 12 or Raspberry Pi OS (Bookworm).
#   sudo systemd/install-dock.sh [--archive-device DEV] [--mosquitto-conf FILE]
#        [--dry-run] [--root DIR]
# docs/install-dock.md says what each step is for. --dry-run prints every step and
# does nothing; --root DIR installs into DIR instead of the running system.
source "$(dirname "$0")/install-lib.sh"

ARCHIVE=/srv/custody/archive
ARCHIVE_DEVICE=""
MOSQUITTO_CONF=""

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
while [ $# -gt 0 ]; do
  case "$1" in
    --archive-device) ARCHIVE_DEVICE=${2:?}; shift ;;
    --mosquitto-conf) MOSQUITTO_CONF=${2:?}; shift ;;
    -h|--help) usage ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done
[ -z "$MOSQUITTO_CONF" ] || [ -r "$MOSQUITTO_CONF" ] || die "--mosquitto-conf: cannot read $MOSQUITTO_CONF"

say "Debian packages: the broker, Python, media tools"
apt_install mosquitto mosquitto-clients python3-venv python3-dev gcc ffmpeg openssl

say "The code in /opt/custody, and its venv"
copy_code /opt/custody
make_venv /opt/custody ""

say "The dock's user (systemd/custody-dock.sysusers)"
make_users "$SRC/systemd/custody-dock.sysusers"

say "The archive volume at $ARCHIVE"
if [ -n "$ARCHIVE_DEVICE" ]; then
  # Its own filesystem, so a full archive never fills the dock's root, and no
  # file in it is ever run.
  ensure_line /etc/fstab "$ARCHIVE_DEVICE $ARCHIVE ext4 nodev,nosuid,noexec 0 2"
else
  note "no --archive-device: the archive is on the root filesystem"
fi
run install -d -m 0750 "$(at "$ARCHIVE")"
own_by custody-dock custody-dock "$(at "$ARCHIVE")"

say "Settings: /etc/custody/dock.toml (kept if it is there)"
run install -d -m 0755 "$(at /etc/custody)"   # a device's settings may live here too
install_config "$SRC/docs/examples/dock.toml" /etc/custody/dock.toml 0640
# Readable by the dock's group, writable by root only: the daemon cannot change its
# own settings (the keys provisioning puts in /etc/custody/dock are kept alike).
own_by root custody-dock "$(at /etc/custody/dock.toml)"

say "Mosquitto: the unit's broker (TLS with client certificates, ACLs)"
install_file "$SRC/systemd/mosquitto-custody.conf" /etc/systemd/system/mosquitto.service.d/custody.conf 0644
if [ -n "$MOSQUITTO_CONF" ]; then
  # `custody provision mosquitto` writes a whole mosquitto.conf. Debian's own
  # /etc/mosquitto/mosquitto.conf (which includes conf.d) already says where the broker
  # persists (/var/lib/mosquitto, the drop-in's StateDirectory) and its pid file, and
  # Mosquitto refuses a second persistence_location: those lines are left out.
  printf '+ install %s as /etc/mosquitto/conf.d/custody.conf without its persistence and pid_file lines\n' "$MOSQUITTO_CONF"
  if [ "$DRY_RUN" = 0 ]; then
    install -d -m 0755 "$(at /etc/mosquitto/conf.d)"
    sed -E '/^(persistence|persistence_location|pid_file)([[:space:]]|$)/d' "$MOSQUITTO_CONF" \
      >"$(at /etc/mosquitto/conf.d/custody.conf)"
    chmod 0640 "$(at /etc/mosquitto/conf.d/custody.conf)"
  fi
  # The drop-in starts the broker as mosquitto, not as root that drops to it: its
  # settings must be readable by that user (Debian's package made it).
  own_by root mosquitto "$(at /etc/mosquitto/conf.d/custody.conf)"
else
  note "no --mosquitto-conf: put the broker settings from 'custody provision' in /etc/mosquitto/conf.d/custody.conf"
fi

say "systemd units"
install_file "$SRC/systemd/custody-dock.service" /etc/systemd/system/custody-dock.service 0644
enable_units custody-dock.service
# Debian's package brings mosquitto.service; under --root it was not installed.
if live; then run systemctl enable mosquitto.service; else note "skipped under --root: systemctl enable mosquitto.service"; fi
start_units mosquitto.service custody-dock.service

say "Done"
note "the dock's keys and the unit's trust file come from provisioning (docs/install-dock.md)"
