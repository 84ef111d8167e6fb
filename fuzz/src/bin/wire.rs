//! Fuzz target `wire`: see `shareaudit::fuzzing::wire_framing`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::wire_framing(data);
    });
}
