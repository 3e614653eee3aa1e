"""``sousveil map``: run the subscriber, import sightings from a file, fuse, export, serve the web map.

Every subcommand takes ``--store`` (default ``$SOUSVEIL_STATE_DIR/map.db``, else
``~/.local/state/sousveil/map.db``). Errors are one line, ``sousveil map: <problem>``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.config import default_state_dir
from firmware.mqtt import DEFAULT_PREFIX, MqttConfigError
from firmware.run_cli import StopFlag, stop_on_signals
from mapper import DEFAULT_GROUP, FORMAT_OF_SUFFIX, FORMATS

# the mapper's modules (numpy, SQLite, fastjsonschema) are imported by the commands that use
# them: every ``sousveil`` command builds this parser
if TYPE_CHECKING:
    from mapper.store import SqliteStore

EXIT_OK, EXIT_ERROR = 0, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("map", help="the map side: subscribe to sightings, fuse them into cameras, export, serve")
    cmds = p.add_subparsers(dest="map_command", required=True, metavar="MAP_COMMAND")

    def store_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--store", type=Path, default=None, help="the map database (default: STATE_DIR/map.db)")

    r = cmds.add_parser("run", help="subscribe to the broker and build the map until stopped (SIGTERM/Ctrl-C)")
    store_arg(r)
    r.add_argument("--host", default="localhost")
    r.add_argument("--port", type=int, default=None, help="default 1883, or 8883 with --tls/--ca-file")
    r.add_argument("--username")
    r.add_argument("--password-file", type=Path, help="a file whose first line is the password")
    r.add_argument("--password-env", help="an environment variable that holds the password")
    r.add_argument("--tls", action="store_true", help="TLS with the system's CA certificates")
    r.add_argument("--ca-file", type=Path, help="TLS with this CA certificate (PEM)")
    r.add_argument(
        "--client-id",
        default=f"sousveil-mapper-{socket.gethostname()}",
        help="the broker keeps this mapper's session under it (default: sousveil-mapper-HOSTNAME;"
        " give each process its own)",
    )
    r.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    r.add_argument("--region", action="append", default=[], metavar="GEOHASH", help="take only this cell (repeat)")
    r.add_argument("--group", default=DEFAULT_GROUP, help=f"MQTT v5 share group (default {DEFAULT_GROUP})")
    r.add_argument("--no-share", action="store_true", help="a plain subscription: this mapper gets every message")
    r.add_argument("--stats-every", type=float, default=60.0, help="print counts every N seconds (0: never)")

    i = cmds.add_parser("import", help="ingest sightings from JSON-lines files (the device's file sink)")
    store_arg(i)
    i.add_argument("files", nargs="+", type=Path)

    f = cmds.add_parser("fuse", help="fuse every pending sighting now")
    store_arg(f)

    e = cmds.add_parser("export", help="write the map: GeoJSON, OSM review file (JOSM), CSV or KML")
    store_arg(e)
    e.add_argument("out", help="output file, or - for standard output")
    e.add_argument("--format", choices=FORMATS, default=None, help="default: from the file's suffix")
    e.add_argument("--rays", action="store_true", help="GeoJSON: add each entity's bearing rays")
    e.add_argument("--min-confidence", type=float, default=None, help="leave out less sure cameras (OSM default 0.5)")
    e.add_argument("--include-observer", action="store_true", help="OSM: also cameras the rays could not place")

    s = cmds.add_parser("serve", help="a web map (Leaflet) and a GeoJSON API on a small HTTP server")
    store_arg(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--tile-url", default="", help="e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (default: none)")
    s.add_argument("--attribution", default="", help="tile attribution (OSM tiles need one)")

    t = cmds.add_parser("stats", help="counts: sightings, pending, entities, rejected messages per reason")
    store_arg(t)


def _store(args: argparse.Namespace) -> SqliteStore:
    from mapper.store import SqliteStore

    return SqliteStore(args.store or default_state_dir() / "map.db")


def _reported() -> tuple[type[Exception], ...]:
    """The errors a command reports in one line (their modules are loaded once one is raised)."""
    from mapper.export import ExportError
    from mapper.store import StoreError

    return (StoreError, ExportError, MqttConfigError, ValueError, OSError)


def run(args: argparse.Namespace) -> int:
    handlers = {
        "run": cmd_run,
        "import": cmd_import,
        "fuse": cmd_fuse,
        "export": cmd_export,
        "serve": cmd_serve,
        "stats": cmd_stats,
    }
    try:
        return handlers[args.map_command](args)
    except Exception as err:
        if args.debug or not isinstance(err, _reported()):
            raise
        print(f"sousveil map: {err}", file=sys.stderr)
        return EXIT_ERROR


def cmd_run(args: argparse.Namespace) -> int:
    from firmware.mqtt import MqttSettings
    from mapper.subscriber import MapSubscriber, SubscriberSettings

    tls = args.tls or args.ca_file is not None
    settings = MqttSettings(
        host=args.host,
        port=args.port or (8883 if tls else 1883),
        client_id=args.client_id,
        username=args.username,
        password_file=args.password_file,
        password_env=args.password_env,
        tls=tls,
        ca_file=args.ca_file,
        topic_prefix=args.prefix,
        session_expiry_s=7 * 86400,
    )
    sub_settings = SubscriberSettings(regions=tuple(args.region), group=None if args.no_share else args.group)
    store = _store(args)
    sub = MapSubscriber(settings, store, sub_settings)
    sub.start()
    where = f"{', '.join(sub_settings.filters(args.prefix))} on {args.host}:{settings.port}"
    if sub.wait_subscribed(10):
        print(f"sousveil map: subscribed to {where}", flush=True)
    else:  # paho keeps trying; say why it has not worked yet
        print(f"sousveil map: not subscribed yet to {where}: {sub.last_error or 'no answer'}", flush=True)
    last = time.monotonic()
    try:
        with stop_on_signals(StopFlag()) as stop:
            while not stop.wait(1.0):
                if args.stats_every and time.monotonic() - last >= args.stats_every:
                    c = sub.counters
                    print(
                        f"received {c.received}, stored {c.stored}, duplicates {c.duplicates},"
                        f" rejected {c.rejected}, fused {c.fused}" + (f"; {sub.last_error}" if sub.last_error else ""),
                        flush=True,
                    )
                    last = time.monotonic()
    finally:
        sub.close()
        store.close()
    return EXIT_OK


def file_topic(line: bytes) -> str:
    """The topic the device would have published ``line`` on (the estimate's cell, else the
    observer's, and the device), read with a plain JSON parse; a placeholder sighting topic when
    the line has none, so that check_message names what is wrong with it (json, schema, ...)."""
    from firmware.geohash import sighting_topic

    try:
        o = json.loads(line)
        where = o["estimate"] if o["estimate"] is not None else o["observer"]
        return sighting_topic(DEFAULT_PREFIX, where["lat_deg"], where["lon_deg"], o["device"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return sighting_topic(DEFAULT_PREFIX, 0.0, 0.0, "0" * 16)


def cmd_import(args: argparse.Namespace) -> int:
    """Each line a sighting as the device's file sink writes it, checked on the topic the device
    would have published it on; counted like the subscriber's."""
    from mapper.fusion import Fusion
    from mapper.validate import Checked, Rejected, RejectLog, check_message

    store = _store(args)
    rejects = RejectLog()
    refused: Counter[str] = Counter()
    stored = dups = 0
    try:
        for path in args.files:
            with path.open("rb") as fh:
                batch: list[Checked] = []
                mine: Counter[str] = Counter()
                for n, raw in enumerate(fh, 1):
                    line = raw.strip()
                    if not line:
                        continue
                    result = check_message(file_topic(line), line)
                    if isinstance(result, Rejected):
                        rejects.add(result, f"{path}:{n}")
                        mine[result.reason] += 1
                    else:
                        batch.append(result)
                new = store.add_checked(batch, refused=mine)  # counted with the duplicates
                refused += mine
                stored += sum(new)
                dups += len(new) - sum(new)
        fused = Fusion(store).run()
        print(f"imported {stored} sightings ({dups} already known, {refused.total()} refused); fused {fused}")
    finally:
        store.close()
    return EXIT_OK


def cmd_fuse(args: argparse.Namespace) -> int:
    from mapper.fusion import Fusion

    store = _store(args)
    try:
        t0 = time.perf_counter()
        n = Fusion(store).run()
        print(f"fused {n} sightings in {time.perf_counter() - t0:.1f} s; {store.stats()['entities']} cameras")
    finally:
        store.close()
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from mapper.export import export

    fmt = args.format
    if fmt is None:
        if args.out == "-":
            raise ValueError("--format is needed when writing to standard output")
        fmt = FORMAT_OF_SUFFIX.get(Path(args.out).suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format from {args.out!r}: use --format {'|'.join(FORMATS)}")
    min_conf = args.min_confidence if args.min_confidence is not None else (0.5 if fmt == "osm" else 0.0)
    store = _store(args)
    try:
        out = sys.stdout if args.out == "-" else Path(args.out)
        n = export(store, fmt, out, rays=args.rays, min_confidence=min_conf, include_observer=args.include_observer)
    finally:
        store.close()
    if args.out != "-":
        print(f"wrote {n} cameras to {args.out} ({fmt})")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from mapper.web.server import serve

    store = _store(args)
    server = serve(store, host=args.host, port=args.port, tile_url=args.tile_url, attribution=args.attribution)
    thread = threading.Thread(target=server.serve_forever, name="map-http", daemon=True)
    thread.start()
    print(f"sousveil map: serving {server.url}")
    try:
        with stop_on_signals(StopFlag()) as stop:
            stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    return EXIT_OK


def cmd_stats(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        for key, value in store.stats().items():
            print(f"{key} {value}")
    finally:
        store.close()
    return EXIT_OK
