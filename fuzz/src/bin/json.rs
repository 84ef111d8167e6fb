//! Fuzz target `json`: see `shareaudit::fuzzing::json_event`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::json_event(data);
    });
}
