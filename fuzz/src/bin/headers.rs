//! Fuzz target `headers`: see `shareaudit::fuzzing::headers`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::headers(data);
    });
}
