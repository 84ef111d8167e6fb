//! Fuzz target `detectors`: see `shareaudit::fuzzing::detectors`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::detectors(data);
    });
}
