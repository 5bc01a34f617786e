#!/usr/bin/env bash
# Moved to scripts/setup_pyreft.sh (the `loreft` peer trains through the same venv); this path keeps working.
exec bash "$(dirname "$0")/../setup_pyreft.sh" "$@"
