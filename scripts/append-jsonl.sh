#!/bin/sh
# Appends the event (stdin) as one line to the file named by $1. Exit 75 asks for a retry.
set -eu
target=${1:?usage: append-jsonl.sh FILE}
mkdir -p "$(dirname "$target")" || exit 75
{ tr -d '\n'; echo; } >>"$target" || exit 75
