//! Fuzz target `container`: see `shareaudit::fuzzing::container`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::container(data);
    });
}
