//! Content detectors (`detectors.md`): personal information inside free-text
//! values that the sender did not declare.
//!
//! One pass over the normalised value finds alphanumeric tokens; a numeric
//! token (with single space or dash separators between digit groups) is
//! classified once, in the spec's priority order, so overlapping detectors
//! resolve by construction: ID18 > USCC > passport > bank card > mobile >
//! IMEI. Email, MAC and GPS run only when a cheap prefilter (`@`,
//! separators, decimal points) says they could match. Context (the field
//! name, or keywords within 20 characters) raises or is required for
//! confidence; rules consume high and medium hits, low ones are only kept
//! for logs. Masked and hashed forms are not reported: they are the
//! de-identified shapes the policy asks for.

pub mod checks;

use crate::model::Date;
use crate::policy::DetectorKind;
use regex::Regex;
use rustc_hash::FxHashSet;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::sync::LazyLock;
use unicode_normalization::UnicodeNormalization;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    Low,
    Medium,
    High,
}

/// The best confidence per detector found in one value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hits([Option<Confidence>; 9]);

impl Hits {
    fn add(&mut self, kind: DetectorKind, c: Confidence) {
        let slot = &mut self.0[kind as usize];
        if slot.is_none_or(|old| old < c) {
            *slot = Some(c);
        }
    }

    pub fn get(&self, kind: DetectorKind) -> Option<Confidence> {
        self.0[kind as usize]
    }

    /// Detectors with a high or medium hit: what the rules act on.
    pub fn reportable(&self) -> impl Iterator<Item = DetectorKind> + '_ {
        DetectorKind::ALL
            .into_iter()
            .filter(|k| self.get(*k).is_some_and(|c| c >= Confidence::Medium))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

const ID_KW: &[&str] = &[
    "身份证",
    "证件",
    "身份",
    "idcard",
    "id_card",
    "cert",
    "identity",
    "id_no",
];
const CARD_KW: &[&str] = &["卡号", "银行卡", "银行", "card", "bank"];
const PHONE_KW: &[&str] = &["手机", "电话", "联系", "mobile", "phone", "tel"];
const IMEI_KW: &[&str] = &["imei", "meid", "device", "设备"];
const PASSPORT_KW: &[&str] = &["护照", "证件号", "通行证", "passport", "permit"];
const ORDERISH: &[&str] = &["order", "trade", "waybill", "tracking", "sku", "shop", "sn"];
const ORDERISH_FIRSTS: [bool; 256] = firsts(ORDERISH);
const MAC_FIELDS: &[&str] = &["mac", "bssid"];

/// The first bytes of `kws`, as a table (`FieldName::has_any`).
const fn firsts(kws: &[&str]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < kws.len() {
        t[kws[i].as_bytes()[0] as usize] = true;
        i += 1;
    }
    t
}
/// Digit groups joined into one number at most (`6222 0212 3456 7894 123` has 5).
const MAX_GROUPS: usize = 8;

/// Byte classes for the one pass that decides what to do with a value.
const AT: u8 = 1;
const SEP: u8 = 2; // `:` or `-`
const DOT: u8 = 4;
const COMMA: u8 = 8;
const LT: u8 = 16;
/// A lead byte of a character NFKC may change for the detectors (U+0080..,
/// U+2000.., U+3000.., U+F000.., U+1xxxx), or `%` (percent-encoding).
const NORMALISE: u8 = 32;
const DEGREE: u8 = 64; // 0xC2, the lead byte of `°`

const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'@' as usize] = AT;
    t[b':' as usize] = SEP;
    t[b'-' as usize] = SEP;
    t[b'.' as usize] = DOT;
    t[b',' as usize] = COMMA;
    t[b'<' as usize] = LT;
    t[b'%' as usize] = NORMALISE;
    t[0xC2] = NORMALISE | DEGREE;
    t[0xE2] = NORMALISE;
    t[0xE3] = NORMALISE;
    t[0xEF] = NORMALISE;
    t[0xF0] = NORMALISE;
    t
};

/// The byte classes present in `b`, and how many ASCII digits it has.
fn profile(b: &[u8]) -> (u8, usize) {
    let mut flags = 0u8;
    let mut digits = 0usize;
    for &c in b {
        flags |= CLASS[c as usize];
        digits += usize::from(c.wrapping_sub(b'0') < 10);
    }
    (flags, digits)
}

/// Scans one value. `field` is its field name (context); `today` bounds
/// plausible birth dates; `allow` holds values never reported.
pub fn scan(value: &str, field: &str, today: Date, allow: &FxHashSet<String>) -> Hits {
    let mut hits = Hits::default();
    if value.len() < 5 {
        return hits;
    }
    let (mut flags, mut digits) = profile(value.as_bytes());
    let text = if flags & NORMALISE != 0 {
        normalise(value)
    } else {
        Cow::Borrowed(value)
    };
    if let Cow::Owned(t) = &text {
        (flags, digits) = profile(t.as_bytes());
    }
    // Every detector needs six digits, an `@`, or (a bare MAC under a MAC-ish
    // field) twelve hex digits.
    let bare_hex = (12..=16).contains(&text.len()) && {
        let t = text.trim();
        t.len() == 12 && t.bytes().all(|c| c.is_ascii_hexdigit())
    };
    if digits < 6 && flags & AT == 0 && !bare_hex {
        return hits;
    }
    let field = FieldName::new(field);
    let mac_field = bare_hex && MAC_FIELDS.iter().any(|k| field.has(k));
    let b = text.as_bytes();
    let s = Scan {
        text: &text,
        b,
        field: &field,
        today,
        allow,
    };
    if digits >= 6 {
        s.tokens(&mut hits);
    }
    if flags & AT != 0 {
        s.emails(&mut hits);
    }
    if flags & (SEP | DOT) != 0 || mac_field {
        s.macs(&mut hits, mac_field);
    }
    if digits >= 6 && ((flags & COMMA != 0 && flags & DOT != 0) || flags & DEGREE != 0) {
        s.gps(&mut hits, flags & COMMA != 0, flags & DEGREE != 0);
    }
    if flags & LT != 0 && digits >= 6 {
        s.mrz(&mut hits);
    }
    hits
}

/// A field name lower-cased once (ASCII; longer names are cut), for keyword tests.
struct FieldName {
    lower: [u8; 48],
    len: usize,
    orderish: OnceCell<bool>,
}

impl FieldName {
    fn new(field: &str) -> FieldName {
        let mut lower = [0u8; 48];
        let len = field.len().min(lower.len());
        for (d, s) in lower.iter_mut().zip(field.as_bytes()) {
            *d = s.to_ascii_lowercase();
        }
        FieldName {
            lower,
            len,
            orderish: OnceCell::new(),
        }
    }

    /// Contains `kw` (lower-case).
    fn has(&self, kw: &str) -> bool {
        let (h, n) = (&self.lower[..self.len], kw.as_bytes());
        // The first byte before the rest: a call to memcmp per window cost
        // more than the names are long.
        let Some((&first, rest)) = n.split_first() else {
            return true;
        };
        n.len() <= h.len() && h.windows(n.len()).any(|w| w[0] == first && &w[1..] == rest)
    }

    /// Contains any of `kws` (lower-case), whose first bytes are `firsts`:
    /// one pass over the name, a table look-up a byte, where a test of
    /// each keyword in turn took a pass each (2% of (c) for `ORDERISH`).
    fn has_any(&self, kws: &[&str], firsts: &[bool; 256]) -> bool {
        let h = &self.lower[..self.len];
        h.iter().enumerate().any(|(i, &c)| {
            firsts[usize::from(c)] && kws.iter().any(|k| h[i..].starts_with(k.as_bytes()))
        })
    }

    fn orderish(&self) -> bool {
        *self
            .orderish
            .get_or_init(|| self.has_any(ORDERISH, &ORDERISH_FIRSTS))
    }
}

/// NFKC (full-width digits and letters to ASCII), zero-width characters
/// removed, percent-encoding decoded. Borrows when there is nothing to do.
///
/// Most values are ASCII or plain CJK, which NFKC leaves alone, so a quick
/// look decides: full-width ASCII (the common case in Chinese input, `１３８`,
/// `，`) is mapped directly (U+FF01..=U+FF5E -> U+0021..=U+007E, exactly what
/// NFKC does); any other character NFKC would change in a way the detectors
/// read (compatibility digits and letters, odd spaces) takes the full NFKC.
pub fn normalise(value: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(value);
    if !value.is_ascii() {
        let (mut fullwidth, mut other) = (false, false);
        for c in value.chars() {
            match c {
                '\u{FF01}'..='\u{FF5E}' => fullwidth = true,
                '\u{200B}'..='\u{200D}' | '\u{FEFF}' => other = true,
                c if needs_nfkc(c) => other = true,
                _ => {}
            }
        }
        if other {
            let kept = value
                .chars()
                .filter(|c| !matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}'));
            out = Cow::Owned(kept.collect::<String>().nfkc().collect());
        } else if fullwidth {
            out = Cow::Owned(
                value
                    .chars()
                    .map(|c| match c {
                        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
                        c => c,
                    })
                    .collect(),
            );
        }
    }
    if out.contains('%') {
        let b = out.as_bytes();
        let encoded = b
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
        if encoded {
            out = Cow::Owned(percent_decode(b));
        }
    }
    out
}

/// Characters outside full-width ASCII that NFKC turns into something a
/// detector reads: spaces, super- and subscripts, enclosed and mathematical
/// digits and letters, half-width forms, ligatures. Plain CJK, kana and
/// CJK punctuation are not among them.
fn needs_nfkc(c: char) -> bool {
    matches!(c,
        '\u{00A0}' | '\u{00B2}' | '\u{00B3}' | '\u{00B9}' | '\u{00BC}'..='\u{00BE}'
        | '\u{2000}'..='\u{200A}' | '\u{2070}'..='\u{209F}' | '\u{2100}'..='\u{218F}'
        | '\u{2460}'..='\u{24FF}' | '\u{3000}' | '\u{FB00}'..='\u{FB4F}' | '\u{FF5F}'..='\u{FFEF}'
        | '\u{1D400}'..='\u{1D7FF}' | '\u{1F100}'..='\u{1F1FF}')
}

fn percent_decode(b: &[u8]) -> String {
    let mut v = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(x) = hex {
                v.push(x);
                i += 3;
                continue;
            }
        }
        v.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// ASCII-case-insensitive substring test (needles are lower-case or CJK).
fn contains_ci(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.len() <= h.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

struct Scan<'a> {
    text: &'a str,
    b: &'a [u8],
    field: &'a FieldName,
    today: Date,
    allow: &'a FxHashSet<String>,
}

impl Scan<'_> {
    /// A keyword in the field name or within 20 characters of `start..end`.
    fn context(&self, start: usize, end: usize, keywords: &[&str]) -> bool {
        if keywords.iter().any(|k| self.field.has(k)) {
            return true;
        }
        let mut from = start.saturating_sub(60); // 20 CJK characters are 60 bytes
        while !self.text.is_char_boundary(from) {
            from += 1;
        }
        let mut to = (end + 60).min(self.b.len());
        while !self.text.is_char_boundary(to) {
            to -= 1;
        }
        let window = &self.text[from..to];
        keywords.iter().any(|k| contains_ci(window, k))
    }

    fn orderish(&self) -> bool {
        self.field.orderish()
    }

    fn allowed(&self, start: usize, end: usize) -> bool {
        !self.allow.is_empty() && self.allow.contains(&self.text[start..end])
    }

    fn tokens(&self, hits: &mut Hits) {
        let b = self.b;
        let n = b.len();
        let mut i = 0;
        while i < n {
            if !b[i].is_ascii_alphanumeric() {
                i += 1;
                continue;
            }
            let start = i;
            while i < n && b[i].is_ascii_alphanumeric() {
                i += 1;
            }
            if numeric(&b[start..i]) {
                // Digit groups joined by single spaces or dashes: 138-0013-8000.
                let mut groups = [(0usize, 0usize); MAX_GROUPS];
                groups[0] = (start, i);
                let mut len = 1;
                while len < MAX_GROUPS
                    && i + 1 < n
                    && (b[i] == b' ' || b[i] == b'-')
                    && b[i + 1].is_ascii_digit()
                    && b[groups[len - 1].1 - 1].is_ascii_digit()
                {
                    let gs = i + 1;
                    let mut j = gs;
                    while j < n && b[j].is_ascii_alphanumeric() {
                        j += 1;
                    }
                    if !numeric(&b[gs..j]) {
                        break;
                    }
                    groups[len] = (gs, j);
                    len += 1;
                    i = j;
                }
                self.numeric_token(&groups[..len], hits);
            } else {
                self.alnum_token(start, i, hits);
            }
        }
    }

    fn numeric_token(&self, groups: &[(usize, usize)], hits: &mut Hits) {
        let (start, end) = (groups[0].0, groups[groups.len() - 1].1);
        let mut digits = [0u8; 24];
        let mut len = 0;
        for &(s, e) in groups {
            for &c in &self.b[s..e] {
                if len < digits.len() {
                    digits[len] = c;
                }
                len += 1;
            }
        }
        if len <= digits.len() && self.classify_digits(&digits[..len], start, end, hits) {
            return;
        }
        if groups.len() > 1 {
            for &(s, e) in groups {
                self.classify_digits(&self.b[s..e], s, e, hits);
            }
        }
    }

    /// Classifies one run of digits (an 18th character may be `X`). True when it matched.
    fn classify_digits(&self, d: &[u8], start: usize, end: usize, hits: &mut Hits) -> bool {
        let n = d.len();
        if n < 11 || self.allowed(start, end) {
            return false;
        }
        let all_digits = d.iter().all(u8::is_ascii_digit);
        let suppressed = |kw: &[&str]| self.orderish() && !self.context(start, end, kw);
        if n == 18 && checks::resident_id(d, self.today) {
            let c = if suppressed(ID_KW) {
                Confidence::Low
            } else {
                Confidence::High
            };
            hits.add(DetectorKind::IdCard, c);
            return true;
        }
        if !all_digits {
            return false;
        }
        if n == 18 && d.starts_with(b"92") && checks::uscc(d) {
            hits.add(DetectorKind::Uscc, Confidence::High);
            return true;
        }
        if (13..=19).contains(&n) {
            let card_kw = self.context(start, end, CARD_KW);
            if let Some(exact_len) = checks::card_bin(d)
                && checks::luhn(d)
            {
                let imei_like = n == 15
                    && !card_kw
                    && (d.starts_with(b"35")
                        || d.starts_with(b"86")
                        || self.context(start, end, IMEI_KW));
                if !imei_like {
                    let c = if suppressed(CARD_KW) || !(card_kw || exact_len) {
                        Confidence::Low
                    } else {
                        Confidence::High
                    };
                    hits.add(DetectorKind::BankCard, c);
                    return true;
                }
            } else if d.starts_with(b"62") && n >= 16 && card_kw {
                // Some domestic cards reportedly fail Luhn: a keyword makes it medium.
                hits.add(DetectorKind::BankCard, Confidence::Medium);
                return true;
            }
        }
        let mobile = match n {
            11 => Some(d),
            13 if d.starts_with(b"86") => Some(&d[2..]),
            15 if d.starts_with(b"0086") => Some(&d[4..]),
            _ => None,
        };
        if let Some(m) = mobile
            && checks::mobile(m)
        {
            let c = if suppressed(PHONE_KW) {
                Confidence::Low
            } else {
                Confidence::High
            };
            hits.add(DetectorKind::Mobile, c);
            return true;
        }
        if n == 15 && checks::luhn(d) && !d.iter().all(|c| *c == b'0') && d != b"004999010640000" {
            let strong =
                d.starts_with(b"35") || d.starts_with(b"86") || self.context(start, end, IMEI_KW);
            hits.add(
                DetectorKind::Imei,
                if strong && !suppressed(IMEI_KW) {
                    Confidence::High
                } else {
                    Confidence::Low
                },
            );
            return true;
        }
        false
    }

    fn alnum_token(&self, start: usize, end: usize, hits: &mut Hits) {
        let t = &self.b[start..end];
        if t.len() == 18 && t.starts_with(b"92") && checks::uscc(t) {
            hits.add(DetectorKind::Uscc, Confidence::High);
            return;
        }
        if (8..=11).contains(&t.len())
            && checks::passport_like(t)
            && self.context(start, end, PASSPORT_KW)
        {
            hits.add(DetectorKind::Passport, Confidence::High);
            return;
        }
        // Digits glued to letters (`tel13800138000`): only the mobile shape is safe to take.
        let mut i = 0;
        while i < t.len() {
            if !t[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let s = i;
            while i < t.len() && t[i].is_ascii_digit() {
                i += 1;
            }
            if i - s == 11 && checks::mobile(&t[s..i]) && !self.allowed(start + s, start + i) {
                hits.add(DetectorKind::Mobile, Confidence::Medium);
            }
        }
    }

    fn emails(&self, hits: &mut Hits) {
        const FILE_EXT: &[&str] = &[
            "png", "jpg", "jpeg", "gif", "js", "css", "json", "svg", "webp", "mp4", "ts", "map",
            "ico", "bmp", "mp3",
        ];
        let b = self.b;
        let local =
            |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
        for at in memchr_all(b, b'@') {
            let mut j = at;
            while j > 0 && local(b[j - 1]) && at - j < 64 {
                j -= 1;
            }
            if j > 0 && local(b[j - 1]) {
                continue; // local part longer than 64
            }
            while j < at && !b[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j == at {
                continue;
            }
            // Domain: labels of [A-Za-z0-9-] joined by dots.
            let mut k = at + 1;
            let mut last_label = (k, k);
            let mut labels = 0;
            loop {
                let ls = k;
                while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'-') {
                    k += 1;
                }
                if k == ls {
                    break;
                }
                last_label = (ls, k);
                labels += 1;
                if k + 1 < b.len() && b[k] == b'.' && b[k + 1].is_ascii_alphanumeric() {
                    k += 1;
                } else {
                    break;
                }
            }
            let tld = &self.text[last_label.0..last_label.1];
            let end = last_label.1;
            if labels < 2
                || !(2..=24).contains(&tld.len())
                || !tld.bytes().all(|c| c.is_ascii_alphabetic())
            {
                continue;
            }
            if FILE_EXT.iter().any(|e| tld.eq_ignore_ascii_case(e)) {
                continue;
            }
            if end < b.len() && (b[end] == b'_' || b[end] == b'-' || b[end] == b':') {
                continue; // `git@github.com:org/repo` is a remote, not a person
            }
            let addr = &self.text[j..end];
            if self.allow.iter().any(|a| a.eq_ignore_ascii_case(addr)) {
                continue;
            }
            hits.add(DetectorKind::Email, Confidence::High);
            return;
        }
    }

    fn macs(&self, hits: &mut Hits, mac_field: bool) {
        let b = self.b;
        let hex = |c: u8| c.is_ascii_hexdigit();
        let seps = b.iter().filter(|c| **c == b':' || **c == b'-').count();
        let dots = b.iter().filter(|c| **c == b'.').count();
        if seps >= 5 {
            for i in 0..b.len().saturating_sub(16) {
                if i > 0 && (hex(b[i - 1]) || b[i - 1] == b':' || b[i - 1] == b'-') {
                    continue;
                }
                let sep = b[i + 2];
                if sep != b':' && sep != b'-' {
                    continue;
                }
                let ok = (0..6).all(|o| {
                    hex(b[i + o * 3])
                        && hex(b[i + o * 3 + 1])
                        && (o == 5 || b[i + o * 3 + 2] == sep)
                });
                let end = i + 17;
                if !ok || (end < b.len() && (hex(b[end]) || b[end] == b':' || b[end] == b'-')) {
                    continue;
                }
                let octets: Vec<u8> = (0..6)
                    .filter_map(|o| {
                        u8::from_str_radix(&self.text[i + o * 3..i + o * 3 + 2], 16).ok()
                    })
                    .collect();
                if real_mac(&octets) {
                    hits.add(DetectorKind::Mac, Confidence::High);
                    return;
                }
            }
        }
        if dots >= 2 {
            // Cisco form 8ca6.df12.3456
            for i in 0..b.len().saturating_sub(13) {
                if i > 0 && (hex(b[i - 1]) || b[i - 1] == b'.') {
                    continue;
                }
                let ok = (0..14).all(|k| {
                    if k == 4 || k == 9 {
                        b[i + k] == b'.'
                    } else {
                        hex(b[i + k])
                    }
                });
                let end = i + 14;
                if !ok || (end < b.len() && (hex(b[end]) || b[end] == b'.')) {
                    continue;
                }
                let h: String = self.text[i..end].chars().filter(|c| *c != '.').collect();
                let octets: Vec<u8> = (0..6)
                    .filter_map(|o| u8::from_str_radix(&h[o * 2..o * 2 + 2], 16).ok())
                    .collect();
                if real_mac(&octets) {
                    hits.add(DetectorKind::Mac, Confidence::High);
                    return;
                }
            }
        }
        // A bare 12-hex value only under a MAC-ish key.
        let t = self.text.trim();
        if mac_field && t.len() == 12 && t.bytes().all(hex) {
            let octets: Vec<u8> = (0..6)
                .filter_map(|o| u8::from_str_radix(&t[o * 2..o * 2 + 2], 16).ok())
                .collect();
            if real_mac(&octets) {
                hits.add(DetectorKind::Mac, Confidence::High);
            }
        }
    }

    fn gps(&self, hits: &mut Hits, has_comma: bool, has_degree: bool) {
        static PAIR: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"(-?\d{1,3})\.(\d{3,})\s*,\s*(-?\d{1,3})\.(\d{3,})")
                .expect("constant pattern")
        });
        static DMS: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r#"\d{1,3}°\d{1,2}['′]\d{1,2}(?:\.\d+)?(?:["″]|′′)?[NSEW]"#)
                .expect("constant pattern")
        });
        let b = self.b;
        if has_comma {
            for m in PAIR.captures_iter(self.text) {
                let Some(whole) = m.get(0) else { continue };
                let before_ok = whole.start() == 0
                    || !(b[whole.start() - 1].is_ascii_digit() || b[whole.start() - 1] == b'.');
                let after_ok = whole.end() == b.len()
                    || !(b[whole.end()].is_ascii_digit() || b[whole.end()] == b'.');
                if !before_ok || !after_ok {
                    continue;
                }
                let num = |i: usize, f: usize| -> Option<f64> {
                    format!("{}.{}", m.get(i)?.as_str(), m.get(f)?.as_str())
                        .parse()
                        .ok()
                };
                let (Some(a), Some(c)) = (num(1, 2), num(3, 4)) else {
                    continue;
                };
                let in_china = |lat: f64, lng: f64| {
                    (3.8..=53.6).contains(&lat) && (73.5..=135.1).contains(&lng)
                };
                if !(in_china(a, c) || in_china(c, a)) {
                    continue;
                }
                let decimals = m
                    .get(2)
                    .map_or(0, |x| x.len())
                    .min(m.get(4).map_or(0, |x| x.len()));
                hits.add(
                    DetectorKind::Gps,
                    if decimals >= 4 {
                        Confidence::High
                    } else {
                        Confidence::Medium
                    },
                );
                return;
            }
        }
        if has_degree && DMS.is_match(self.text) {
            hits.add(DetectorKind::Gps, Confidence::High);
        }
    }

    fn mrz(&self, hits: &mut Hits) {
        let b = self.b;
        let mrz_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'<';
        let mut i = 0;
        while i < b.len() {
            if !mrz_char(b[i]) {
                i += 1;
                continue;
            }
            let s = i;
            while i < b.len() && mrz_char(b[i]) {
                i += 1;
            }
            if i - s == 44 && checks::mrz_line2(&b[s..i]) {
                hits.add(DetectorKind::Passport, Confidence::High);
                return;
            }
        }
    }
}

/// Digits, the last of which may be `X`/`x` (an ID number's check character;
/// only the ID test accepts it).
fn numeric(t: &[u8]) -> bool {
    match t.split_last() {
        Some((last, rest)) => {
            (last.is_ascii_digit() || matches!(last, b'X' | b'x'))
                && !rest.is_empty()
                && rest.iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// Not all-zero, broadcast, Android's 02:00:00:00:00:00 placeholder, nor multicast.
fn real_mac(o: &[u8]) -> bool {
    o.len() == 6
        && o.iter().any(|x| *x != 0)
        && !o.iter().all(|x| *x == 0xff)
        && o != [2, 0, 0, 0, 0, 0]
        && o[0] & 1 == 0
}

fn memchr_all(b: &[u8], needle: u8) -> impl Iterator<Item = usize> + '_ {
    b.iter()
        .enumerate()
        .filter(move |(_, c)| **c == needle)
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests;
