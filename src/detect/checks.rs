//! Check-digit and structure tests of the identifiers in `detectors.md`.
//! Each takes the bare characters (separators removed).

use crate::model::Date;

/// GB 11643-1999 resident ID: province, real birth date (1900..=`today`), ISO 7064 MOD 11-2.
pub fn resident_id(s: &[u8], today: Date) -> bool {
    if s.len() != 18 || !s[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let province = u32::from(s[0] - b'0') * 10 + u32::from(s[1] - b'0');
    let province_ok = matches!(province, 11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83);
    if !province_ok {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| s[r].iter().fold(0u32, |a, b| a * 10 + u32::from(b - b'0'));
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    let Some(born) = Date::ymd(y as i32, m, d) else {
        return false;
    };
    if y < 1900 || born > today {
        return false;
    }
    const W: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = s[..17]
        .iter()
        .zip(W)
        .map(|(c, w)| u32::from(c - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize];
    s[17].to_ascii_uppercase() == check
}

/// ISO/IEC 7812-1 Luhn over ASCII digits.
pub fn luhn(s: &[u8]) -> bool {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = s
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Card scheme by BIN, and whether `len` is an exact length for it.
pub fn card_bin(s: &[u8]) -> Option<bool> {
    let p = |n: usize| std::str::from_utf8(s.get(..n)?).ok()?.parse::<u32>().ok();
    let len = s.len();
    if s.starts_with(b"62") {
        return Some((16..=19).contains(&len)); // China UnionPay
    }
    if s.starts_with(b"4") {
        return Some(matches!(len, 13 | 16 | 19)); // Visa
    }
    if p(2).is_some_and(|x| (51..=55).contains(&x))
        || p(4).is_some_and(|x| (2221..=2720).contains(&x))
    {
        return Some(len == 16); // Mastercard
    }
    if s.starts_with(b"34") || s.starts_with(b"37") {
        return Some(len == 15); // Amex
    }
    if p(4).is_some_and(|x| (3528..=3589).contains(&x)) {
        return Some((16..=19).contains(&len)); // JCB
    }
    if s.starts_with(b"9558") {
        return Some(len == 19); // legacy domestic debit (ICBC)
    }
    None
}

/// An 11-digit mainland mobile number in an allocated segment.
pub fn mobile(s: &[u8]) -> bool {
    if s.len() != 11 || s[0] != b'1' || !s.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let (b, c) = (s[1], s[2]);
    match b {
        b'3' | b'8' => true,
        b'4' => matches!(c, b'5' | b'7' | b'9'),
        b'5' => c != b'4',
        b'6' => matches!(c, b'2' | b'5' | b'6' | b'7'),
        b'7' => c <= b'8',
        b'9' => c != b'4',
        _ => false,
    }
}

const USCC_CHARS: &[u8] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// GB 32100-2015 Unified Social Credit Code check character.
pub fn uscc(s: &[u8]) -> bool {
    if s.len() != 18 || !s[2..8].iter().all(u8::is_ascii_digit) {
        return false;
    }
    const W: [u32; 17] = [
        1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
    ];
    let mut sum = 0;
    for (c, w) in s[..17].iter().zip(W) {
        let Some(v) = USCC_CHARS.iter().position(|x| x == c) else {
            return false;
        };
        sum += v as u32 * w;
    }
    let check = (31 - sum % 31) % 31;
    USCC_CHARS[check as usize] == s[17]
}

/// ICAO 9303 check digit (weights 7, 3, 1; A-Z = 10-35, `<` = 0).
pub fn mrz_check(field: &[u8]) -> Option<u8> {
    let mut sum = 0u32;
    for (i, c) in field.iter().enumerate() {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            b'<' => 0,
            _ => return None,
        };
        sum += v * [7, 3, 1][i % 3];
    }
    Some(b'0' + (sum % 10) as u8)
}

/// A TD3 passport MRZ second line: document number, birth and expiry check digits hold.
pub fn mrz_line2(s: &[u8]) -> bool {
    s.len() == 44
        && s.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'<')
        && mrz_check(&s[0..9]) == Some(s[9])
        && mrz_check(&s[13..19]) == Some(s[19])
        && mrz_check(&s[21..27]) == Some(s[27])
}

/// PRC passports and travel permits (`detectors.md` 7.5); context is required by the caller.
pub fn passport_like(s: &[u8]) -> bool {
    let digits = |r: &[u8]| !r.is_empty() && r.iter().all(u8::is_ascii_digit);
    let letter_ok =
        |c: u8| c.is_ascii_digit() || (c.is_ascii_uppercase() && c != b'I' && c != b'O');
    match s {
        [b'E', c, rest @ ..] if rest.len() == 7 && letter_ok(*c) && digits(rest) => true,
        [b'G', rest @ ..] if rest.len() == 8 && digits(rest) => true,
        [b'D' | b'S' | b'P', b'E', rest @ ..] if (7..=8).contains(&rest.len()) && digits(rest) => {
            true
        }
        [b'D' | b'S' | b'P', rest @ ..] if (7..=8).contains(&rest.len()) && digits(rest) => true,
        [b'H' | b'M', rest @ ..] if (rest.len() == 8 || rest.len() == 10) && digits(rest) => true,
        [b'C', c, rest @ ..]
            if rest.len() == 7
                && (c.is_ascii_digit() || c.is_ascii_uppercase())
                && digits(rest) =>
        {
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::ymd(2026, 11, 29).unwrap()
    }

    #[test]
    fn resident_id_vectors() {
        for valid in [
            "11010519491231002X",
            "110105201203150011",
            "440306199001011236",
            "11010519491231002x",
        ] {
            assert!(resident_id(valid.as_bytes(), today()), "{valid}");
        }
        assert!(
            !resident_id(b"440524188001010014", today()),
            "born 1880: implausible"
        );
        assert!(!resident_id(b"110105194912310021", today()), "bad check");
        assert!(
            !resident_id(b"990105194912310021", today()),
            "no province 99"
        );
        assert!(
            !resident_id(b"110105202802290011", today()),
            "born in the future"
        );
    }

    #[test]
    fn bank_card_vectors() {
        for valid in [
            "6217000000000000004",
            "6228480402564890018",
            "4111111111111111",
            "6222021234567894",
        ] {
            assert!(
                luhn(valid.as_bytes()) && card_bin(valid.as_bytes()).is_some(),
                "{valid}"
            );
        }
        assert!(!luhn(b"6212345678901234"));
        assert_eq!(card_bin(b"1712345678901"), None);
    }

    #[test]
    fn imei_vectors() {
        assert!(luhn(b"490154203237518"));
        assert!(!luhn(b"490154203237519"));
    }

    #[test]
    fn mobile_segments() {
        assert!(mobile(b"13800138000") && mobile(b"19912345678") && mobile(b"17012345678"));
        assert!(!mobile(b"14012345678"), "140-144 are IoT numbers");
        assert!(!mobile(b"12012345678") && !mobile(b"1380013800"));
    }

    #[test]
    fn uscc_vectors() {
        assert!(uscc(b"91350100M000100Y43") && uscc(b"9131000063159284XQ"));
        assert!(
            !uscc(b"91350100M000100Y4Z")
                && !uscc(b"91310115MA1H8R7C6D")
                && !uscc(b"91350211M0000XUF46")
        );
    }

    #[test]
    fn mrz_specimen() {
        assert_eq!(mrz_check(b"L898902C3"), Some(b'6'));
        assert_eq!(mrz_check(b"740812"), Some(b'2'));
        assert_eq!(mrz_check(b"120415"), Some(b'9'));
        assert!(mrz_line2(b"L898902C36UTO7408122F1204159ZE184226B<<<<<10"));
        assert!(!mrz_line2(b"L898902C37UTO7408122F1204159ZE184226B<<<<<10"));
    }

    #[test]
    fn passport_shapes() {
        for ok in [
            "E12345678",
            "EA1234567",
            "G12345678",
            "DE1234567",
            "S1234567",
            "H12345678",
            "C01234567",
        ] {
            assert!(passport_like(ok.as_bytes()), "{ok}");
        }
        for no in ["EI1234567", "E1234567", "X12345678", "G1234567A"] {
            assert!(!passport_like(no.as_bytes()), "{no}");
        }
    }
}
