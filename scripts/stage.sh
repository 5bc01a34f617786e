# Sourced by the staged scripts (train_default_sae.sh, width_readability.sh):
#   STAGES_LOG=<file>; stage <name> <command...>   runs the command and appends its wall time to $STAGES_LOG
stage() {
  local name="$1"; shift
  local t0; t0=$(date +%s)
  "$@"
  echo "{\"stage\": \"$name\", \"seconds\": $(( $(date +%s) - t0 )), \"finished\": \"$(date -u +%FT%TZ)\"}" >> "$STAGES_LOG"
}
