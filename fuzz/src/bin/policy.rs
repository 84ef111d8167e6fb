//! Fuzz target `policy`: see `shareaudit::fuzzing::policy`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::policy(data);
    });
}
