//! The fast path of JSON decoding: one pass over the bytes, straight into
//! the model: no tape, no serde visitors, no copy of the record.
//!
//! Each decoder fills a record the caller owns, reusing the allocations of
//! the record decoded before (a stream decodes into one record over and
//! over: its strings and items keep their capacity). It takes the fields it
//! knows and skips the rest (checking their syntax), as the serde form
//! does, and resets what the new record leaves out. It answers `None` at
//! the first doubt (a missing required field, a wrong type, an unknown enum
//! value, a duplicate key, a null where a value is required, an escaped
//! key, a number it cannot be sure of, bytes that are not UTF-8, nesting
//! deeper than [`SKIP_DEPTH`] in an unknown field), leaving the record half
//! written; the caller then hands the bytes to serde_json, which decides
//! and explains. So this path may only ever *accept less* than serde_json,
//! never more or differently; `tests::agrees_with_serde` checks that over
//! generated traffic decoded into one record, the fixtures and their
//! mutations, and the `json` fuzz target over arbitrary bytes.
//!
//! Strings are most of an event: their ends (a quote, a backslash or a
//! control character) are found 16 bytes at a time (SSE2, which every
//! x86-64 has), and the whole record is checked as UTF-8 once, with SIMD,
//! before the walk.

use crate::model::*;
use std::str::FromStr;

/// Nesting allowed inside a field the model does not have. serde_json
/// allows 128 levels in all; deeper is its to refuse.
const SKIP_DEPTH: u32 = 100;

/// A cursor over one record.
struct P<'a> {
    b: &'a [u8],
    i: usize,
}

/// The index of the first byte at or after `i` that ends a run of plain
/// string bytes (`"`, `\` or a control character), or `b.len()`.
/// The same three are what a JSON writer must escape (`json::write_str`).
#[inline]
pub(super) fn plain_end(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86-64; every load reads 16 bytes at
        // `i`, with `i + 16 <= b.len()`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast());
                let special = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                    // Unsigned v <= 0x1f.
                    _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                );
                let mask = _mm_movemask_epi8(special) as u32;
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

impl<'a> P<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `word` (a literal), whole.
    fn word(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// The bytes from `from` to `to` as text. The record was checked as
    /// UTF-8 before the walk, and both ends are at ASCII bytes.
    #[inline]
    fn text_at(&self, from: usize, to: usize) -> &'a str {
        // SAFETY: `event` checked all of `b` as UTF-8, and `from` and `to`
        // are at ASCII bytes (a quote, a backslash, a control character)
        // or at the end: character boundaries.
        unsafe { std::str::from_utf8_unchecked(&self.b[from..to]) }
    }

    /// A string with no escape in it, borrowed. An escape is a doubt.
    #[inline]
    fn plain_str(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = plain_end(self.b, start);
        if self.b.get(end) != Some(&b'"') {
            return None;
        }
        self.i = end + 1;
        Some(self.text_at(start, end))
    }

    /// A string, unescaped into `out` (cleared first, its allocation kept).
    fn str_into(&mut self, out: &mut String) -> Option<()> {
        self.eat(b'"')?;
        out.clear();
        loop {
            let start = self.i;
            let end = plain_end(self.b, start);
            out.push_str(self.text_at(start, end));
            self.i = end + 1;
            match self.b.get(end)? {
                b'"' => return Some(()),
                b'\\' => out.push(self.escape()?),
                _ => return None, // a control character
            }
        }
    }

    /// A string whose text is not kept: its escapes are checked as
    /// `str_into` checks them.
    fn skip_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let end = plain_end(self.b, self.i);
            self.i = end + 1;
            match self.b.get(end)? {
                b'"' => return Some(()),
                b'\\' => {
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// The character of an escape, the backslash read. A lone surrogate
    /// is a doubt.
    fn escape(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        Some(match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                if (0xD800..0xDC00).contains(&hi) {
                    self.word(b"\\u")?;
                    let lo = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.b.get(self.i..self.i + 4)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.i += 4;
        Some(n)
    }

    /// `null`, consumed: `Some(true)`; another value: `Some(false)`, nothing consumed.
    #[inline]
    fn null(&mut self) -> Option<bool> {
        if self.peek()? == b'n' {
            self.word(b"null")?;
            Some(true)
        } else {
            Some(false)
        }
    }

    fn bool(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.word(b"true").map(|()| true),
            b'f' => self.word(b"false").map(|()| false),
            _ => None,
        }
    }

    /// An integer as serde_json reads one into an integer field:
    /// `-?(0|[1-9][0-9]*)` within i64. A fraction, an exponent and `-0`
    /// (a float to serde_json) are doubts, and so is overflow.
    fn int(&mut self) -> Option<i64> {
        let negative = self.peek()? == b'-';
        let start = self.i + usize::from(negative);
        let mut i = start;
        let mut n: i64 = 0;
        while let Some(&d) = self.b.get(i).filter(|d| d.is_ascii_digit()) {
            let d = i64::from(d - b'0');
            n = n.checked_mul(10)?;
            n = if negative {
                n.checked_sub(d)?
            } else {
                n.checked_add(d)?
            };
            i += 1;
        }
        let digits = i - start;
        if digits == 0
            || (digits > 1 && self.b[start] == b'0')
            || (negative && n == 0)
            || matches!(self.b.get(i), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        self.i = i;
        Some(n)
    }

    /// A number whose value is not kept, its syntax checked:
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn skip_number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }

    /// Any value, its syntax checked, at most `depth` arrays and objects deep.
    fn skip(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_str(),
            b'{' => {
                let inner = depth.checked_sub(1)?;
                self.object(|p, _| p.skip(inner))
            }
            b'[' => {
                let inner = depth.checked_sub(1)?;
                self.array(|p, _| p.skip(inner))
            }
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => self.skip_number(),
        }
    }

    /// An object: `field` reads each value (the cursor at it), given its
    /// key. An escaped key is a doubt. Always inlined: each object is read
    /// by one closure, and the event's object left out of line (as an
    /// unrelated change to the crate once made LLVM do) cost 4% of (a).
    #[inline(always)]
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.plain_str()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An array: `element` reads each value, given its index.
    #[inline]
    fn array(&mut self, mut element: impl FnMut(&mut Self, usize) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        let mut n = 0;
        loop {
            element(self, n)?;
            n += 1;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    self.ws();
                }
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string into `slot`, in its old allocation.
    fn text(&mut self, slot: &mut String) -> Option<()> {
        self.str_into(slot)
    }

    /// A nullable string into `slot`, in its old allocation if it had one.
    fn nullable_text(&mut self, slot: &mut Option<String>) -> Option<()> {
        if self.null()? {
            *slot = None;
            return Some(());
        }
        self.str_into(slot.get_or_insert_with(String::new))
    }

    /// A value parsed from a string with no escape (enums, timestamps).
    fn parse<T: FromStr>(&mut self, slot: &mut T) -> Option<()> {
        *slot = self.plain_str()?.parse().ok()?;
        Some(())
    }

    /// A nullable value: null is `None`; a wrong type is a doubt.
    fn nullable<T>(
        &mut self,
        slot: &mut Option<T>,
        f: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<()> {
        *slot = if self.null()? { None } else { Some(f(self)?) };
        Some(())
    }

    /// A nullable object into `slot`, in its old allocations if it had one.
    fn nullable_object<T>(
        &mut self,
        slot: &mut Option<T>,
        blank: fn() -> T,
        fill: fn(&mut Self, &mut T) -> Option<()>,
    ) -> Option<()> {
        if self.null()? {
            *slot = None;
            return Some(());
        }
        fill(self, slot.get_or_insert_with(blank))
    }

    fn int_as<T: TryFrom<i64>>(&mut self) -> Option<T> {
        T::try_from(self.int()?).ok()
    }
}

/// The fields of one object seen so far, a bit each: a second key of the
/// same name is a doubt, and so is a required field never seen.
#[derive(Default)]
struct Seen(u32);

impl Seen {
    /// Runs `fill` for field `bit` the first time it comes.
    #[inline]
    fn first(&mut self, bit: u32, fill: impl FnOnce() -> Option<()>) -> Option<()> {
        if self.has(bit) {
            return None;
        }
        self.0 |= 1 << bit;
        fill()
    }

    fn has(&self, bit: u32) -> bool {
        self.0 & (1 << bit) != 0
    }

    /// Fields `0..n` (the required ones come first) were all seen.
    fn first_n(&self, n: u32) -> Option<()> {
        let all = (1 << n) - 1;
        (self.0 & all == all).then_some(())
    }
}

fn put<T>(slot: &mut T, value: Option<T>) -> Option<()> {
    *slot = value?;
    Some(())
}

/// One event, the whole of `bytes` (whitespace around it allowed).
pub(super) fn event(bytes: &[u8], e: &mut DataSharingEvent) -> Option<()> {
    simdutf8::basic::from_utf8(bytes).ok()?;
    let mut p = P { b: bytes, i: 0 };
    p.ws();
    event_object(&mut p, e)?;
    p.ws();
    (p.i == bytes.len()).then_some(())
}

fn event_object(p: &mut P<'_>, e: &mut DataSharingEvent) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        // Required: bits 0 to 10.
        "event_id" => seen.first(0, || p.text(&mut e.event_id)),
        "occurred_at" => seen.first(1, || {
            put(
                &mut e.occurred_at,
                Timestamp::parse_rfc3339(p.plain_str()?).ok(),
            )
        }),
        "source_service" => seen.first(2, || p.text(&mut e.source_service)),
        "flow" => seen.first(3, || p.parse(&mut e.flow)),
        "subject" => seen.first(4, || subject(p, &mut e.subject)),
        "recipient" => seen.first(5, || recipient(p, &mut e.recipient)),
        "purpose" => seen.first(6, || p.parse(&mut e.purpose)),
        "legal_basis" => seen.first(7, || p.parse(&mut e.legal_basis)),
        "data" => seen.first(8, || items(p, &mut e.data)),
        "record_count" => seen.first(9, || put(&mut e.record_count, p.int())),
        "transport" => seen.first(10, || transport(p, &mut e.transport)),
        // Optional: bits 11 to 15.
        "order" => seen.first(11, || p.nullable_object(&mut e.order, Order::empty, order)),
        "legal_document" => seen.first(12, || {
            p.nullable_object(&mut e.legal_document, LegalDocument::empty, legal_document)
        }),
        "files_encrypted" => seen.first(13, || p.nullable(&mut e.files_encrypted, P::bool)),
        "agreement_ref" => seen.first(14, || p.nullable_text(&mut e.agreement_ref)),
        "consent_ref" => seen.first(15, || p.nullable_text(&mut e.consent_ref)),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(11)?;
    if !seen.has(11) {
        e.order = None;
    }
    if !seen.has(12) {
        e.legal_document = None;
    }
    if !seen.has(13) {
        e.files_encrypted = None;
    }
    if !seen.has(14) {
        e.agreement_ref = None;
    }
    if !seen.has(15) {
        e.consent_ref = None;
    }
    Some(())
}

fn subject(p: &mut P<'_>, s: &mut Subject) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "user_id" => seen.first(0, || p.text(&mut s.user_id)),
        "role" => seen.first(1, || p.parse(&mut s.role)),
        "age" => seen.first(2, || p.nullable(&mut s.age, P::int_as)),
        "guardian_consent" => seen.first(3, || p.nullable(&mut s.guardian_consent, P::bool)),
        "third_party_authorized" => {
            seen.first(4, || p.nullable(&mut s.third_party_authorized, P::bool))
        }
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(2)?;
    if !seen.has(2) {
        s.age = None;
    }
    if !seen.has(3) {
        s.guardian_consent = None;
    }
    if !seen.has(4) {
        s.third_party_authorized = None;
    }
    Some(())
}

fn recipient(p: &mut P<'_>, r: &mut Recipient) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "id" => seen.first(0, || p.text(&mut r.id)),
        "category" => seen.first(1, || p.parse(&mut r.category)),
        "region" => seen.first(2, || p.text(&mut r.region)),
        "acting_for_merchant" => seen.first(3, || p.nullable_text(&mut r.acting_for_merchant)),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(3)?;
    if !seen.has(3) {
        r.acting_for_merchant = None;
    }
    Some(())
}

fn order(p: &mut P<'_>, o: &mut Order) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "id" => seen.first(0, || p.text(&mut o.id)),
        "type" => seen.first(1, || p.parse(&mut o.order_type)),
        "merchant_id" => seen.first(2, || p.text(&mut o.merchant_id)),
        "cash_on_delivery" => seen.first(3, || put(&mut o.cash_on_delivery, p.bool())),
        "insured" => seen.first(4, || put(&mut o.insured, p.bool())),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(3)?;
    if !seen.has(3) {
        o.cash_on_delivery = false;
    }
    if !seen.has(4) {
        o.insured = false;
    }
    Some(())
}

/// The data items, each in the place (and allocations) of the item there before.
fn items(p: &mut P<'_>, data: &mut Vec<DataItem>) -> Option<()> {
    let mut n = 0;
    p.array(|p, i| {
        if i == data.len() {
            data.push(DataItem {
                field: String::new(),
                category: None,
                value: None,
            });
        }
        n = i + 1;
        item(p, &mut data[i])
    })?;
    data.truncate(n);
    Some(())
}

fn item(p: &mut P<'_>, d: &mut DataItem) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "field" => seen.first(0, || p.text(&mut d.field)),
        "category" => seen.first(1, || p.nullable_text(&mut d.category)),
        "value" => seen.first(2, || p.nullable_text(&mut d.value)),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(1)?;
    if !seen.has(1) {
        d.category = None;
    }
    if !seen.has(2) {
        d.value = None;
    }
    Some(())
}

fn transport(p: &mut P<'_>, t: &mut Transport) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "encrypted" => seen.first(0, || put(&mut t.encrypted, p.bool())),
        "protocol" => seen.first(1, || p.nullable_text(&mut t.protocol)),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(1)?;
    if !seen.has(1) {
        t.protocol = None;
    }
    Some(())
}

fn legal_document(p: &mut P<'_>, d: &mut LegalDocument) -> Option<()> {
    let mut seen = Seen::default();
    p.object(|p, k| match k {
        "type" => seen.first(0, || p.text(&mut d.doc_type)),
        "reference" => seen.first(1, || p.text(&mut d.reference)),
        _ => p.skip(SKIP_DEPTH),
    })?;
    seen.first_n(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::generate;

    fn fast(bytes: &[u8]) -> Option<DataSharingEvent> {
        let mut e = DataSharingEvent::empty();
        fast_into(bytes, &mut e).map(|()| e)
    }

    fn fast_into(bytes: &[u8], e: &mut DataSharingEvent) -> Option<()> {
        event(bytes, e)
    }

    fn serde(bytes: &[u8]) -> Option<DataSharingEvent> {
        serde_json::from_slice(bytes).ok()
    }

    /// The fast path accepts only what serde_json accepts, and reads it the
    /// same, into a fresh event and into one that held the full fixture
    /// (every optional field set, three items).
    fn agree(bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        if let Some(f) = fast(bytes) {
            assert_eq!(Some(f), serde(bytes), "{text}");
        }
        let mut full = fast(FULL.as_bytes()).expect("the fixture decodes");
        if fast_into(bytes, &mut full).is_some() {
            assert_eq!(
                Some(full),
                serde(bytes),
                "decoded into the full fixture: {text}"
            );
        }
    }

    const FULL: &str = include_str!("../../tests/fixtures/event-full.json");

    #[test]
    fn agrees_with_serde() {
        let mut lines: Vec<String> = generate::events(&generate::Options::default(), 2000)
            .iter()
            .map(|g| serde_json::to_string(&g.event).unwrap())
            .collect();
        lines.push(FULL.to_owned());
        // One event decoded into, over and over, as a stream does: nothing of
        // a record may stay behind in the next (the traffic mixes orders,
        // legal documents, consent refs, ages and values present and absent).
        let mut reused = DataSharingEvent::empty();
        for line in &lines {
            let f = fast(line.as_bytes());
            assert!(f.is_some(), "a valid event takes the fast path: {line}");
            assert_eq!(f, serde(line.as_bytes()), "{line}");
            assert!(fast_into(line.as_bytes(), &mut reused).is_some());
            assert_eq!(
                Some(&reused),
                f.as_ref(),
                "decoded into the last event: {line}"
            );
        }
        // Mutations: each must either be refused by the fast path or read as serde reads it.
        let base = &lines[lines.len() - 1];
        let compact: serde_json::Value = serde_json::from_str(base).unwrap();
        let base = compact.to_string();
        let mutations = [
            (r#""record_count":1"#, r#""record_count":1.0"#),
            (r#""record_count":1"#, r#""record_count":-7"#),
            (
                r#""record_count":1"#,
                r#""record_count":99999999999999999999"#,
            ),
            (r#""record_count":1"#, r#""record_count":"1""#),
            (r#""age":34"#, r#""age":9999999999"#),
            (r#""age":34"#, r#""age":null"#),
            (r#""age":34"#, r#""age":34.5"#),
            (r#""flow":"share""#, r#""flow":"Share""#),
            (r#""flow":"share""#, r#""flow":null"#),
            (r#""event_id":"#, r#""event_id":"dup","event_id":"#),
            (r#""order":{"#, r#""order":null,"x":{"#),
            (r#""cash_on_delivery":true"#, r#""cash_on_delivery":null"#),
            (r#","insured":false"#, ""),
            (r#""encrypted":true"#, r#""encrypted":"yes""#),
            (r#""data":["#, r#""data":[null,"#),
            (r#""files_encrypted":true"#, r#""files_encrypted":1"#),
            (
                r#""occurred_at":"2026-11-20T10:15:30.123+08:00""#,
                r#""occurred_at":"2026-11-20 02:15:30""#,
            ),
            (r#""region":"CN""#, r#""region":"C\u004e""#),
            (
                r#""legal_document":{"reference":"L-1","type":"subpoena"}"#,
                r#""legal_document":{"type":"subpoena"}"#,
            ),
            (r#""source_service":"order-fulfilment","#, ""),
            (r#""consent_ref":"c-9""#, r#""consent_ref":{"a":1}"#),
        ];
        for (from, to) in mutations {
            assert!(base.contains(from), "{from} not in {base}");
            agree(base.replacen(from, to, 1).as_bytes());
        }
        // Optional fields left out (renamed away), fewer items, nulls: the fast
        // path takes each, and reads it as serde does into an event that held
        // them all.
        let absent = [
            (r#""age":"#, r#""age_":"#),
            (r#""guardian_consent":"#, r#""guardian_consent_":"#),
            (
                r#""third_party_authorized":"#,
                r#""third_party_authorized_":"#,
            ),
            (r#""acting_for_merchant":"#, r#""acting_for_merchant_":"#),
            (r#""order":"#, r#""order_":"#),
            (r#""cash_on_delivery":"#, r#""cash_on_delivery_":"#),
            (r#""category":"contact"#, r#""category_":"contact"#),
            (r#""value":"张三""#, r#""value_":"张三""#),
            (r#""protocol":"#, r#""protocol_":"#),
            (r#""legal_document":"#, r#""legal_document_":"#),
            (r#""files_encrypted":"#, r#""files_encrypted_":"#),
            (r#""agreement_ref":"#, r#""agreement_ref_":"#),
            (r#""consent_ref":"#, r#""consent_ref_":"#),
            (
                r#",{"category":null,"field":"buyer_memo","value":null}"#,
                "",
            ),
            (r#""order":{"#, r#""order":null,"order_":{"#),
            (
                r#""agreement_ref":"dpa-2026-01""#,
                r#""agreement_ref":null"#,
            ),
        ];
        for (from, to) in absent {
            assert!(base.contains(from), "{from} not in {base}");
            let mutated = base.replacen(from, to, 1);
            assert!(fast(mutated.as_bytes()).is_some(), "{mutated}");
            agree(mutated.as_bytes());
        }
        // An escaped string is read as serde reads it.
        let escaped = base.replacen(r#""region":"CN""#, r#""region":"C\u004e""#, 1);
        assert_eq!(
            fast(escaped.as_bytes()).map(|e| e.recipient.region),
            Some("CN".to_owned())
        );
        assert!(fast(b"[1,2]").is_none() && fast(b"{}").is_none() && fast(b"null").is_none());
    }

    /// The one-pass reader's own edges: escapes, whitespace, numbers and
    /// nesting in fields the model lacks, control characters, bytes that
    /// are not UTF-8. Each is read as serde reads it or left to serde.
    #[test]
    fn its_own_edges_agree_with_serde() {
        let full: serde_json::Value = serde_json::from_str(FULL).unwrap();
        let base = full.to_string();
        let taken = [
            // Escapes of every kind, a surrogate pair among them.
            (
                r#""region":"CN""#,
                r#""region":"\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00\u0000""#,
            ),
            (r#""value":"张三""#, r#""value":"张\u4e09 \"x\" 三""#),
            // Whitespace everywhere JSON allows it.
            (r#""flow":"share""#, " \"flow\" \t:\r\n \"share\" "),
            (r#""data":["#, r#""data": [ "#),
            // Fields the model lacks, of every shape.
            (
                r#""flow":"#,
                r#""x":[1,-2.5e+3,0,-0,0.0,1E-2,true,false,null,"s\u0041",{"a":{"b":[[]]}},[],{}],"flow":"#,
            ),
            (r#""flow":"#, r#""x":1e999,"flow":"#),
            // Zero, which the tape could not tell from -0.
            (r#""record_count":1"#, r#""record_count":0"#),
            (r#""age":34"#, r#""age":0"#),
            (
                r#""record_count":1"#,
                r#""record_count":-9223372036854775808"#,
            ),
            (
                r#""record_count":1"#,
                r#""record_count":9223372036854775807"#,
            ),
        ];
        for (from, to) in taken {
            assert!(base.contains(from), "{from} not in {base}");
            let mutated = base.replacen(from, to, 1);
            assert!(
                fast(mutated.as_bytes()).is_some(),
                "the fast path takes {mutated}"
            );
            agree(mutated.as_bytes());
        }
        let doubts = [
            (r#""record_count":1"#, r#""record_count":-0"#),
            (r#""record_count":1"#, r#""record_count":01"#),
            (r#""record_count":1"#, r#""record_count":1e0"#),
            (
                r#""record_count":1"#,
                r#""record_count":9223372036854775808"#,
            ),
            (r#""record_count":1"#, r#""record_count":-"#),
            (r#""flow":"#, r#""x":-,"flow":"#),
            (r#""flow":"#, r#""x":1.,"flow":"#),
            (r#""flow":"#, r#""x":.5,"flow":"#),
            (r#""flow":"#, r#""x":1e,"flow":"#),
            (r#""flow":"#, r#""x":tru,"flow":"#),
            (r#""flow":"#, r#""x":[1,],"flow":"#),
            (r#""flow":"#, r#""x":{"a":1,},"flow":"#),
            (r#""flow":"#, r#""x":{"a"},"flow":"#),
            (r#""flow":"#, r#""x":"\x","flow":"#),
            (r#""flow":"#, r#""x":"\u12","flow":"#),
            (r#""flow":"#, r#""x":"\ud800","flow":"#),
            (r#""flow":"#, r#""x":"\udc00","flow":"#),
            (r#""flow":"#, r#""x":"\ud800\u0041","flow":"#),
            (r#""flow":"#, "\"x\":\"tab\there\",\"flow\":"),
            (r#""flow":"#, "\"x\":\"\u{7f}\",\"flow\":"),
            (r#""flow":"#, r#""\u0078":1,"flow":"#),
            (r#""flow":"share""#, r#""flow":"sh\u0061re""#),
            (r#""flow":"share""#, r#""flow":"share","#),
            (r#""flow":"share""#, r#""flow" "share""#),
            (r#""region":"CN""#, "\"region\":\"C\nN\""),
        ];
        for (from, to) in doubts {
            assert!(base.contains(from), "{from} not in {base}");
            agree(base.replacen(from, to, 1).as_bytes());
        }
        // Deep nesting in a field the model lacks: to 100 levels read, past
        // it left to serde (which refuses past 128).
        for depth in [99, 100, 101, 127, 128, 129, 5000] {
            let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let mutated = base.replacen(r#""flow":"#, &format!(r#""x":{nested},"flow":"#), 1);
            agree(mutated.as_bytes());
            assert_eq!(fast(mutated.as_bytes()).is_some(), depth <= 100, "{depth}");
        }
        // Not UTF-8 inside a field the model lacks: serde_json skips such a
        // string unread; the fast path leaves the record to it.
        let mut bytes = base
            .replacen(r#""flow":"#, r#""x":"??","flow":"#, 1)
            .into_bytes();
        let at = bytes.windows(2).position(|w| w == b"??").unwrap();
        bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        assert!(fast(&bytes).is_none());
        agree(&bytes);
        // Around and after the record.
        agree(format!(" \n{base}\t ").as_bytes());
        assert!(fast(format!(" \n{base}\t ").as_bytes()).is_some());
        assert!(fast(format!("{base} x").as_bytes()).is_none());
        assert!(fast(format!("{base}{base}").as_bytes()).is_none());
        for cut in 0..base.len() {
            assert!(fast(&base.as_bytes()[..cut]).is_none(), "cut at {cut}");
        }
    }
}
