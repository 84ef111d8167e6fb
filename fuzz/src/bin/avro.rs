//! Fuzz target `avro`: see `shareaudit::fuzzing::avro_datum`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        shareaudit::fuzzing::avro_datum(data);
    });
}
