#!/usr/bin/env bash
# Install the Custody recorder on a Raspberry Pi OS (Bookworm) device.
#   sudo systemd/install-pi.sh [--device-id ID] [--serial uart|gadget|none]
#        [--tty NAME] [--rtc ds3231|pcf85063a|none] [--dry-run] [--root DIR]
# docs/install-pi.md says what each step is for. --dry-run prints every step and
# does nothing; --root DIR installs into DIR instead of the running system.
source "$(dirname "$0")/install-lib.sh"

DEVICE_ID=""
SERIAL=gadget
TTY=""
RTC=none
BOOT=/boot/firmware

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

parse_common "$@"
set -- "${REST[@]+"${REST[@]}"}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device-id) DEVICE_ID=${2:?}; shift ;;
    --serial) SERIAL=${2:?}; shift ;;
    --tty) TTY=${2:?}; shift ;;
    --rtc) RTC=${2:?}; shift ;;
    -h|--help) usage ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done
case "$SERIAL" in
  uart) TTY=${TTY:-ttyS0} ;;
  gadget) TTY=${TTY:-ttyGS0} ;;
  none) ;;
  *) die "--serial: uart, gadget or none, got '$SERIAL'" ;;
esac
case "$RTC" in ds3231|pcf85063a|none) ;; *) die "--rtc: ds3231, pcf85063a or none, got '$RTC'" ;; esac
[[ -z "$DEVICE_ID" || "$DEVICE_ID" =~ ^[A-Za-z0-9._-]+$ ]] || die "--device-id: letters, digits, . _ - only"

if live && [ "$DRY_RUN" = 0 ]; then
  grep -q '^VERSION_CODENAME=bookworm' /etc/os-release 2>/dev/null \
    || note "warning: this is not Debian/Raspberry Pi OS Bookworm; going on"
fi

say "Debian packages: the camera stack from Raspberry Pi OS, audio, media, OTP and I2C tools"
apt_install python3-picamera2 python3-venv python3-dev gcc libportaudio2 portaudio19-dev \
  ffmpeg espeak-ng sox i2c-tools rpi-eeprom raspi-utils

say "The code in /opt/custody, and its venv (with the system's picamera2)"
copy_code /opt/custody
make_venv /opt/custody "[pi]" --system-site-packages

say "The recorder's user (systemd/custody-device.sysusers)"
make_users "$SRC/systemd/custody-device.sysusers"

say "Settings: /etc/custody/recorder.toml (kept if it is there)"
if [ -e "$(at /etc/custody/recorder.toml)" ]; then
  note "keeping the existing /etc/custody/recorder.toml"
else
  # 0755: a dock's settings may live here too; each file says who may read it.
  run install -d -m 0755 "$(at /etc/custody)"
  printf '+ write /etc/custody/recorder.toml from docs/examples/recorder.toml\n'
  if [ "$DRY_RUN" = 0 ]; then
    sed "s/^device_id = .*/device_id = \"${DEVICE_ID:-DEVICE-ID}\"/" \
      "$SRC/docs/examples/recorder.toml" >"$(at /etc/custody/recorder.toml)"
    chmod 0640 "$(at /etc/custody/recorder.toml)"
  fi
  [ -n "$DEVICE_ID" ] || note "set device_id in /etc/custody/recorder.toml before starting"
fi
# Readable by the recorder's group, writable by root only: the service cannot change
# its own settings (the key and trust file provisioning puts here are kept alike).
own_by root custody "$(at /etc/custody/recorder.toml)"

say "Serial maintenance console: $SERIAL${TTY:+ on $TTY}"
case "$SERIAL" in
  uart)
    ensure_line "$BOOT/config.txt" "enable_uart=1"
    # The kernel's own console and a login getty must not share the technicians' line.
    if [ -e "$(at "$BOOT/cmdline.txt")" ] && grep -q 'console=serial0,[0-9]*' "$(at "$BOOT/cmdline.txt")"; then
      run sed -i -E 's/console=serial0,[0-9]+ ?//' "$(at "$BOOT/cmdline.txt")"
    fi
    ;;
  gadget)
    # USB OTG in peripheral mode; g_cdc is one gadget with both a serial port
    # (ttyGS0, the console) and an Ethernet link (usb0, to the dock).
    ensure_line "$BOOT/config.txt" "dtoverlay=dwc2,dr_mode=peripheral"
    install_file "$SRC/systemd/custody-gadget.modules" /etc/modules-load.d/custody-gadget.conf 0644
    ;;
esac

say "Real-time clock: $RTC"
if [ "$RTC" != none ]; then
  ensure_line "$BOOT/config.txt" "dtparam=i2c_arm=on"
  ensure_line "$BOOT/config.txt" "dtoverlay=i2c-rtc,$RTC"
fi

say "systemd units"
install_file "$SRC/systemd/custody-recorder.service" /etc/systemd/system/custody-recorder.service 0644
install_file "$SRC/systemd/custody-console@.service" /etc/systemd/system/custody-console@.service 0644
install_file "$SRC/systemd/custody-console.rules" /etc/polkit-1/rules.d/50-custody-console.rules 0644
units=(custody-recorder.service)
if [ "$SERIAL" != none ]; then
  units+=("custody-console@$TTY.service")
  # shellcheck disable=SC2046
  run systemctl $(root_opt) mask "serial-getty@$TTY.service"
fi
enable_units "${units[@]}"

say "Done"
note "the device's key and the unit's trust file come from provisioning (docs/install-pi.md)"
note "reboot for the boot settings (serial, RTC) to take effect; the recorder starts at boot"
