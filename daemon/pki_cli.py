"""The TLS part of ``custody provision``: the unit's CA, certificates, Mosquitto's folder.

    custody provision unit ...                 also makes tls/ (CA, a certificate per dock)
    custody provision device ...               also gives the device its TLS certificate
    custody provision cert --keys K --role watcher --name WATCH-01
    custody provision mosquitto --keys K --out /etc/mosquitto/custody --host 0.0.0.0 --port 8883
    custody provision revoke --keys K --name CAM-0042     (then mosquitto --crl, restart it)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.mqtt.broker_config import write_broker_files
from daemon.pki import CA_CERT, ROLES, IssuedCert, PKIError, UnitCA
from protocol.store_reader import TRUST_NAME, read_trust

TLS_DIR = "tls"
BROKER_NAME = "broker"
COMMANDS = ("cert", "mosquitto", "revoke")
DEFAULT_DOCK_HOSTS = ("localhost", "127.0.0.1")


def folder_of(keys: Path) -> Path:
    return Path(keys) / TLS_DIR


def unit_ca(keys: Path) -> UnitCA:
    """The unit's CA in ``keys/tls``, made on first use (named after the trust file's unit)."""
    folder = Path(keys) / TLS_DIR
    if (folder / CA_CERT).exists():
        return UnitCA.load(folder)
    return UnitCA.create(folder, read_trust(Path(keys) / TRUST_NAME).unit)


def provision_unit_tls(keys: Path, docks: list[str],
                       dock_hosts: tuple[str, ...] = DEFAULT_DOCK_HOSTS) -> list[IssuedCert]:
    """The CA and each dock's certificate, unless already made (by create_unit)."""
    ca = unit_ca(keys)
    return [ca.find(dock) or ca.issue(dock, "dock", hosts=[dock, *dock_hosts])
            for dock in docks]


def provision_device_tls(keys: Path, device: str) -> IssuedCert:
    """A device's TLS certificate (its key is not its ledger signing key), unless made."""
    ca = unit_ca(keys)
    return ca.find(device) or ca.issue(device, "device")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    cert = sub.add_parser("cert", help="issue a TLS certificate from the unit's CA")
    cert.add_argument("--keys", type=Path, required=True, help="the unit's key folder")
    cert.add_argument("--role", choices=ROLES, required=True)
    cert.add_argument("--name", required=True, help="the identity (certificate CN, MQTT user)")
    cert.add_argument("--host", action="append", default=[],
                      help="a host name or address it serves on (broker, dock; repeatable)")
    mosq = sub.add_parser("mosquitto", help="write Mosquitto's folder: config, ACL, TLS files")
    mosq.add_argument("--keys", type=Path, required=True, help="the unit's key folder")
    mosq.add_argument("--out", type=Path, required=True,
                      help="the broker's folder (user mosquitto must be able to reach it)")
    mosq.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    mosq.add_argument("--port", type=int, default=8883, help="listen port (default 8883)")
    mosq.add_argument("--name", action="append", default=[],
                      help="a name clients reach the broker by, for its certificate "
                      "(default: --host; repeatable)")
    mosq.add_argument("--crl", action="store_true", help="check client certificates "
                      "against the unit's CRL (after `custody provision revoke`)")
    rev = sub.add_parser("revoke", help="revoke an identity's certificate (writes tls/crl.pem)")
    rev.add_argument("--keys", type=Path, required=True, help="the unit's key folder")
    who = rev.add_mutually_exclusive_group(required=True)
    who.add_argument("--name", help="the identity to revoke")
    who.add_argument("--device", help="a device id (the same as --name, checked to be a device)")
    who.add_argument("--dock", help="a dock id (the same as --name, checked to be a dock)")


def run(args: argparse.Namespace) -> None:
    """Raises PKIError (or StoreError for a missing trust file)."""
    ca = unit_ca(args.keys)
    if args.what == "cert":
        issued = ca.issue(args.name, args.role, hosts=args.host)
        print(f"{issued.role} {issued.name}: {issued.cert} and {issued.key}")
        if args.role in ("dock", "watcher"):
            print("the broker's ACL names docks and watchers: run `custody provision mosquitto` "
                  "again and send mosquitto SIGHUP")
    elif args.what == "mosquitto":
        if not 0 < args.port < 65536:
            raise PKIError(f"--port {args.port}: not a TCP port")
        broker = ca.find(BROKER_NAME) or ca.issue(BROKER_NAME, "broker",
                                                  hosts=args.name or [args.host])
        files = write_broker_files(args.out, ca, broker, ca.unit, args.host, args.port,
                                   use_crl=args.crl)
        print(f"mosquitto: {files.conf} (ACL {files.acl}); run: mosquitto -c {files.conf}")
    else:
        name, role = args.name, None
        if args.device or args.dock:
            name, role = (args.device, "device") if args.device else (args.dock, "dock")
        issued = ca.find(name)
        if issued is None or (role and issued.role != role):
            raise PKIError(f"{folder_of(args.keys)}: no {role or 'certificate'} {name!r} to "
                           "revoke")
        crl = ca.revoke(name)
        print(f"revoked {issued.role} {name} (certificate serial {issued.serial:x}): {crl}; "
              "copy it to the docks; run `custody provision mosquitto --crl` again and "
              "restart mosquitto (it reads the CRL when its listener starts)")
