"""The map side: subscribe to the shared broker, validate sightings, fuse them into camera entities.

The flow, one module each::

    subscriber (paho, MQTT v5, shared subscriptions)
      -> validate (size, strict JSON, firmware/sighting.schema.json, sane ranges, topic == device)
      -> store (SQLite WAL + R*Tree; one interface, so PostGIS can follow)
      -> fusion (group sightings into entities; weighted least squares on all bearing rays)
      -> export (GeoJSON, OSM review file, CSV, KML) and web (Leaflet page + GeoJSON by bbox)

``sousveil map run|export|serve`` (mapper/cli.py) drives it.
"""

from typing import Final

# What ``sousveil map``'s argument parser needs, kept here so that building it (every
# ``sousveil`` command does) imports none of the modules above.
DEFAULT_GROUP: Final = "sousveil-mapper"  # the subscriber's MQTT v5 share group
FORMATS: Final = ("geojson", "osm", "csv", "kml")  # mapper.export's writers
FORMAT_OF_SUFFIX: Final = {".geojson": "geojson", ".json": "geojson", ".osm": "osm", ".csv": "csv", ".kml": "kml"}
