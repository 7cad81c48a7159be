#!/bin/sh
# First start: write the configuration, key and API token into the volume;
# then run the node in the foreground (SIGTERM stops it cleanly).
set -e
if [ ! -e "$FOGWIRE_HOME/fogwire.toml" ]; then
    fogwire --home "$FOGWIRE_HOME" init
fi
exec fogwire --home "$FOGWIRE_HOME" node "$@"
