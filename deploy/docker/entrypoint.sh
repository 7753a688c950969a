#!/bin/sh
# Container entry point: serve the model bundle in MODEL_DIR under the name MODEL_NAME.
#
# No bundle there (no manifest.json) and TRAIN_DATA names a CSV/Parquet of normal records:
# train one first (TRAIN_ARGS adds options to `anomaly train`). The image ships the sample
# data as /app/data/train.csv. Arguments starting with '-' go to `anomaly serve`; any other
# command runs instead (e.g. `anomaly info /models/default`).
#
# Settings: MODEL_NAME (default "default"), MODEL_DIR (default /models/$MODEL_NAME; with no
# bundle there and models in the settings, as in ANOMALY_CONFIG's file: those alone), HOST
# (0.0.0.0), PORT (8000), WORKERS (2), and the service's own ANOMALY_* variables. On any HOST
# but a loopback address `anomaly serve` requires ANOMALY_SCORING_TOKEN (or
# ANOMALY_ALLOW_OPEN_SCORING=true, behind a network that already decides who may score).
set -eu

if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

name="${MODEL_NAME:-default}"
dir="${MODEL_DIR:-/models/$name}"

# The settings name the models (--config, ANOMALY_CONFIG, ANOMALY_MODELS), a fleet's, and no
# bundle is in /models/default nor asked for (MODEL_NAME, MODEL_DIR, TRAIN_DATA): they are
# served alone. The entry point refused them ("mount one there").
named_by_settings() {
    for arg in "$@"; do
        case "$arg" in --config | --config=*) return 0 ;; esac
    done
    [ -n "${ANOMALY_CONFIG:-}" ] || env | grep -q '^ANOMALY_MODELS[=_]'
}
if [ -z "${MODEL_NAME:-}${MODEL_DIR:-}${TRAIN_DATA:-}" ] && [ ! -f "$dir/manifest.json" ] &&
    named_by_settings "$@"; then
    exec anomaly serve --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
        --workers "${WORKERS:-2}" "$@"
fi

if [ ! -f "$dir/manifest.json" ]; then
    if [ -z "${TRAIN_DATA:-}" ]; then
        echo "no model bundle in $dir (no manifest.json): mount one there, or set TRAIN_DATA" \
            "to a table of normal records to train one at start" >&2
        exit 2
    fi
    echo "no model bundle in $dir: training one on $TRAIN_DATA" >&2
    # TRAIN_ARGS is a list of options, split on spaces on purpose.
    # shellcheck disable=SC2086
    anomaly train "$TRAIN_DATA" --out "$dir" ${TRAIN_ARGS:-}
fi

exec anomaly serve --model "$name=$dir" --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}" \
    --workers "${WORKERS:-2}" "$@"
