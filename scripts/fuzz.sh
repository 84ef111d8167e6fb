#!/usr/bin/env bash
# The fuzz campaigns: every target of `shareaudit::fuzzing` under AFL++
# (cargo-afl, stable Rust), from its committed corpus (fuzz/corpus/<target>).
#
#   scripts/fuzz.sh [--seconds N] [--execs N] [--jobs N] [--out DIR] [--merge] [target ...]
#
# Each target runs until N executions (default 10,000,000) or N seconds
# (default 3600), whichever comes first, `--jobs` at a time (default 2),
# each process limited to 512 MB of memory and 1 s per input. A table of
# executions, speed, crashes and hangs is printed at the end (and kept in
# DIR/summary.md, DIR being fuzz/out unless --out says); crashes and hangs
# are in DIR/<target>/default/.
# `--merge` adds what a campaign found to the committed corpus, minimised
# with afl-cmin. scripts/test.sh runs `--seconds 10` as a smoke.
# Installs cargo-afl (and builds AFL++) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=3600
execs=10000000
jobs=2
merge=false
out=fuzz/out
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --execs) execs="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --merge) merge=true; shift ;;
    --out) out="$2"; shift 2 ;;
    -*) echo "scripts/fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    targets=(json avro wire headers container consent policy detectors)
fi

if ! cargo afl --version >/dev/null 2>&1; then
    cargo install cargo-afl --locked
fi
# Builds AFL++ and its runtime for this rustc, once.
cargo afl config --build >/dev/null 2>&1 || true

(cd fuzz && cargo afl build --release --locked --quiet)

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1
mkdir -p "$out"
out=$(cd "$out" && pwd)

run() {
    local t=$1
    rm -rf "${out:?}/$t"
    (cd fuzz && cargo afl fuzz -i "corpus/$t" -o "$out/$t" -m 512 -t 1000 \
        -E "$execs" -V "$seconds" "target/release/$t") >"$out/$t.log" 2>&1 || {
        echo "scripts/fuzz.sh: afl-fuzz failed on $t; see $out/$t.log" >&2
        tail -20 "$out/$t.log" >&2
        return 1
    }
}

pids=()
failed=0
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || failed=1
    done
    echo "fuzzing $t (up to $execs executions or $seconds s)"
    run "$t" &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || failed=1; done

stat() { grep -E "^$2 " "$out/$1/default/fuzzer_stats" | sed 's/.*: //'; }
{
    echo "| target | executions | execs/s | run time (s) | corpus | crashes | hangs |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for t in "${targets[@]}"; do
        f="$out/$t/default/fuzzer_stats"
        [ -f "$f" ] || { echo "| $t | (no stats) | | | | | |"; failed=1; continue; }
        start=$(stat "$t" start_time); last=$(stat "$t" last_update)
        echo "| $t | $(stat "$t" execs_done) | $(stat "$t" execs_per_sec) | $((last - start)) | $(stat "$t" corpus_count) | $(stat "$t" saved_crashes) | $(stat "$t" saved_hangs) |"
        if [ "$(stat "$t" saved_crashes)" != 0 ] || [ "$(stat "$t" saved_hangs)" != 0 ]; then
            echo "scripts/fuzz.sh: $t found crashes or hangs: $out/$t/default/crashes, hangs" >&2
            failed=1
        fi
    done
} | tee "$out/summary.md"

if $merge; then
    for t in "${targets[@]}"; do
        rm -rf "$out/$t.cmin"
        # The awk afl-cmin: the Python one (`cargo afl cmin`) found no tuples here.
        bin=$(ls -d "$HOME"/.local/share/afl.rs/rustc-*/afl.rs-*/afl/bin | tail -1)
        (cd fuzz && "$bin/afl-cmin.awk" -i "$out/$t/default/queue" -o "$out/$t.cmin" -m 512 -t 1000 \
            -- "target/release/$t" >/dev/null 2>&1)
        for f in "$out/$t.cmin"/*; do
            cp "$f" "fuzz/corpus/$t/$(sha256sum "$f" | cut -c1-16)"
        done
        echo "$t: corpus now $(ls "fuzz/corpus/$t" | wc -l) files"
    done
fi
exit $failed
