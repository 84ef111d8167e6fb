//! Fuzz target `consent`: see `shareaudit::fuzzing::consent`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::consent(data);
    });
}
