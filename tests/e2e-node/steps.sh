# The step timer of both end-to-end drivers (tests/e2e-node/run.sh, tests/e2e-kind/run.sh):
# sourced, not run.
#
#   step LABEL COMMAND...   runs COMMAND and records how long it took under LABEL
#   print_steps TITLE       prints every recorded step's duration

timings=()
step() {
    local label=$1 start=$SECONDS
    shift
    printf '\n--- %s\n' "$label" >&2
    "$@"
    timings+=("$(printf '%-26s %5ss' "$label" $((SECONDS - start)))")
}
print_steps() {
    printf '\n--- %s: step durations\n' "$1"
    printf '%s\n' "${timings[@]}"
}
