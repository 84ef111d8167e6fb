#!/usr/bin/env bash
# Instructions per event of each workload of benches/audit.rs, counted by
# callgrind, for this tree and a base commit, side by side: a comparison
# that a loaded machine (a fuzz campaign, a build) cannot blur, unlike
# criterion's times. One pass over the 10,000 events of each workload,
# collected inside `workload` only (the fixture's set-up is not counted).
#
#   scripts/bench-instructions.sh [BASE]     # BASE: a commit, default HEAD~1
#
# The base is built from a git worktree with this tree's benches/audit.rs
# (the workloads must be the same code; a base without `codec::datum`
# keeps its own), in the shared target/.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-HEAD~1}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 2; }

bench_bin() { # dir -> path of the audit bench binary built there
    (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench --locked --bench audit --no-run \
        --message-format=json 2>/dev/null) |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "audit" and m.get("executable"):
        print(m["executable"])'
}

root=$(pwd)
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null
if [ -e "$work/base/src/codec/datum.rs" ]; then
    cp benches/audit.rs "$work/base/benches/audit.rs"
else
    # Before the direct Avro decoder: the base keeps its own bench, whose
    # (c) is the apache-avro path; (f) and (g) are not counted.
    echo "base $(git rev-parse --short "$base") has no codec::datum: its own benches/audit.rs is used" >&2
fi
if ! grep -q "pub fn for_policy" "$work/base/src/consent/"*.rs; then
    # Before the consent history was kept by time.
    sed -i 's/ConsentTable::for_policy(&policy.settings)/ConsentTable::new(policy.settings.consent_history_per_user)/' \
        "$work/base/benches/audit.rs"
fi
cp "$(bench_bin "$work/base")" "$work/audit-base"
# The base's build wrote the shared target/ after this tree's sources were
# last touched, so cargo would take this tree's (now overwritten) build as
# fresh and both columns would be the base: touch a source to rebuild it.
touch src/lib.rs
cp "$(bench_bin "$root")" "$work/audit-head"

count() { # binary workload -> instructions in `workload`
    SHAREAUDIT_BENCH_ONCE=$2 valgrind --tool=callgrind --toggle-collect='*audit*workload*' \
        --callgrind-out-file="$work/cg.out" "$1" >/dev/null 2>&1
    callgrind_annotate "$work/cg.out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n { gsub(",", "", $1); print $1; n = 1 }'
}

printf '| workload | %s: instructions/event | HEAD: instructions/event | change |\n|---|---:|---:|---:|\n' \
    "$(git rev-parse --short "$base")"
for w in a_parse_json b_parse_json_and_audit c_decode_avro_and_audit d_audit_only e_json_tape_floor f_decode_avro; do
    if [ "$w" = f_decode_avro ] && [ ! -e "$work/base/src/codec/datum.rs" ]; then
        continue # no direct decoder in the base
    fi
    b=$(count "$work/audit-base" "$w")
    h=$(count "$work/audit-head" "$w")
    python3 -c "b, h = $b / 10000, $h / 10000; print(f'| $w | {b:,.0f} | {h:,.0f} | {100 * (h - b) / b:+.1f}% |')"
done
