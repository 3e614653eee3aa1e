"""sousveil's on-device side: the command line, and (to come) camera, GPS, tracker, outbox, MQTT."""
