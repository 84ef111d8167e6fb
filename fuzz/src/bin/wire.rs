//! Fuzz target `wire`: see `shareaudit::fuzzing::wire_framing`.
fn main() {
    // No abort hook: a panic the library catches on purpose (apache-avro's, in
    // `avro::parse_schema`) is not a crash; one that escapes still aborts.
    afl::fuzz_nohook!(|data: &[u8]| {
        shareaudit::fuzzing::wire_framing(data);
    });
}
