//! The vectors of `detectors.md`, each through the whole scanner.

use super::*;

fn today() -> Date {
    Date::ymd(2026, 11, 29).unwrap()
}

fn allow() -> FxHashSet<String> {
    ["support@kuaishou.com", "4001260088"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The detectors that report (high or medium) for `value` under `field`.
fn found(field: &str, value: &str) -> Vec<DetectorKind> {
    scan(value, field, today(), &allow()).reportable().collect()
}

use DetectorKind::*;

#[test]
fn resident_ids() {
    assert_eq!(
        found("buyer_memo", "身份证 11010519491231002X 谢谢"),
        vec![IdCard]
    );
    assert_eq!(found("remark", "110105201203150011"), vec![IdCard]);
    assert_eq!(found("remark", "440306199001011236"), vec![IdCard]);
    assert_eq!(
        found("remark", "11010519491231002x"),
        vec![IdCard],
        "lower-case x"
    );
    assert_eq!(
        found("remark", "110105 19491231 002X"),
        vec![IdCard],
        "grouped"
    );
    assert_eq!(
        found("remark", "１１０１０５１９４９１２３１００２Ｘ"),
        vec![IdCard],
        "full-width"
    );
    assert_eq!(
        found("remark", "1101\u{200B}0519491231002X"),
        vec![IdCard],
        "zero-width inside"
    );
    assert!(
        found("remark", "440524188001010014").is_empty(),
        "born 1880"
    );
    assert!(
        found("remark", "110105194912310021").is_empty(),
        "bad check"
    );
    assert!(found("remark", "110105********002X").is_empty(), "masked");
    assert!(
        found("remark", "A11010519491231002X").is_empty(),
        "glued to a letter"
    );
}

#[test]
fn a_date_embedded_waybill_number_is_not_an_id_without_an_id_keyword() {
    // A checksum-valid ID shape under a waybill key: suppressed.
    assert!(found("waybill_no", "440306199001011236").is_empty());
    assert_eq!(found("waybill_no", "证件 440306199001011236"), vec![IdCard]);
}

#[test]
fn mobiles() {
    assert_eq!(found("buyer_memo", "+86 138-0013-8000"), vec![Mobile]);
    assert_eq!(found("buyer_memo", "请打13800138000"), vec![Mobile]);
    assert_eq!(found("buyer_memo", "0086 13800138000"), vec![Mobile]);
    assert_eq!(found("buyer_memo", "tel13800138000"), vec![Mobile]);
    assert!(
        found("buyer_memo", "1712345678901").is_empty(),
        "13-digit millisecond timestamp"
    );
    assert!(
        found("buyer_memo", "1234567890123456789").is_empty(),
        "snowflake id"
    );
    assert!(found("buyer_memo", "138****8000").is_empty(), "masked");
    assert!(
        found("buyer_memo", "客服 4001260088").is_empty(),
        "the platform hotline"
    );
    assert!(
        found("order_id", "13800138000").is_empty(),
        "an 11-digit order number"
    );
}

#[test]
fn bank_cards() {
    assert_eq!(found("remark", "6217000000000000004"), vec![BankCard]);
    assert_eq!(found("remark", "卡号 6228480402564890018"), vec![BankCard]);
    assert_eq!(found("remark", "4111111111111111"), vec![BankCard]);
    assert_eq!(found("remark", "6222 0212 3456 7894"), vec![BankCard]);
    assert!(
        found("remark", "6212345678901234").is_empty(),
        "Luhn fails, no keyword"
    );
    assert_eq!(
        found("remark", "银行卡 6212345678901234"),
        vec![BankCard],
        "62 + keyword: medium"
    );
    assert!(
        found("remark", "621700******0004").is_empty(),
        "PCI-truncated"
    );
}

#[test]
fn imeis() {
    assert_eq!(found("remark", "imei: 490154203237518"), vec![Imei]);
    assert_eq!(found("imei", "490154203237518"), vec![Imei]);
    assert!(
        found("remark", "imei: 490154203237519").is_empty(),
        "bad Luhn"
    );
    assert!(
        found("remark", "imei 004999010640000").is_empty(),
        "emulator placeholder"
    );
}

#[test]
fn emails() {
    assert_eq!(found("remark", "邮箱 zhangsan@163.com 谢谢"), vec![Email]);
    assert_eq!(found("remark", "12345678@qq.com"), vec![Email]);
    for not in [
        "icon@2x.png",
        "@babel/core",
        "@用户名 你好",
        "git@github.com:org/repo.git",
        "support@kuaishou.com",
        "a@b",
    ] {
        assert!(found("remark", not).is_empty(), "{not}");
    }
}

#[test]
fn passports_need_context_or_an_mrz() {
    assert_eq!(found("remark", "护照 E12345678"), vec![Passport]);
    assert_eq!(found("passport_no", "G12345678"), vec![Passport]);
    assert!(
        found("remark", "SKU E12345678").is_empty(),
        "coupon-shaped code without context"
    );
    assert_eq!(
        found(
            "remark",
            "P<UTOERIKSSON<<ANNA<MARIA L898902C36UTO7408122F1204159ZE184226B<<<<<10"
        ),
        vec![Passport]
    );
}

#[test]
fn uscc_only_for_sole_proprietorships() {
    assert!(
        found("invoice_title", "91350100M000100Y43").is_empty(),
        "a company is not a person"
    );
    // A constructed 92... (个体工商户) code with a valid check character.
    let mut code = *b"92350100M000100Y40";
    for c in b"0123456789ABCDEFGHJKLMNPQRTUWXY" {
        code[17] = *c;
        if checks::uscc(&code) {
            break;
        }
    }
    assert!(checks::uscc(&code));
    assert_eq!(
        found("invoice_title", std::str::from_utf8(&code).unwrap()),
        vec![Uscc]
    );
}

#[test]
fn macs() {
    assert_eq!(found("remark", "8C:A6:DF:12:34:56"), vec![Mac]);
    assert_eq!(found("remark", "8ca6.df12.3456"), vec![Mac]);
    assert_eq!(
        found("remark", "DA:A1:19:00:00:01"),
        vec![Mac],
        "randomised, still an identifier"
    );
    assert_eq!(found("wifi_mac", "8ca6df123456"), vec![Mac]);
    for not in [
        "02:00:00:00:00:00",
        "12:34:56",
        "FF:FF:FF:FF:FF:FF",
        "00:00:00:00:00:00",
        "fe80::1ff:fe23:4567:890a",
        "8C:A6-DF:12:34:56",
    ] {
        assert!(found("remark", not).is_empty(), "{not}");
    }
    assert!(
        found("remark", "8ca6df123456").is_empty(),
        "bare hex needs a MAC key"
    );
}

#[test]
fn gps() {
    assert_eq!(
        found("remark", r#"{"loc":"116.397499,39.908722"}"#),
        vec![Gps]
    );
    assert_eq!(found("remark", "lat 39.9087,116.3975"), vec![Gps]);
    assert_eq!(
        found("remark", "39.9087，116.3975"),
        vec![Gps],
        "full-width comma"
    );
    assert_eq!(found("remark", "39°54′26″N"), vec![Gps]);
    assert!(
        found("remark", "price 39.90,116.40").is_empty(),
        "two decimals"
    );
    assert!(found("remark", "v1.2.3,4.5.6").is_empty());
    assert!(
        found("remark", "12.3456,200.1234").is_empty(),
        "outside China"
    );
}

#[test]
fn url_encoded_values_are_decoded() {
    assert_eq!(found("query", "mail=zhangsan%40163.com&x=1"), vec![Email]);
}

#[test]
fn plain_text_finds_nothing() {
    for v in [
        "放门卫，谢谢",
        "北京市朝阳区某路1号",
        "张三",
        "order 2024-06-01 12:00",
        "",
        "42",
    ] {
        assert!(found("buyer_memo", v).is_empty(), "{v}");
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A crude fuzz: every prefix of a mixed string, and odd unicode.
    let s = "身份证11010519491231002X,+86 138-0013-8000 a@b.cn 8C:A6:DF:12:34:56 39.9087,116.3975 %E4%B8 P<<";
    for i in 0..s.len() {
        if s.is_char_boundary(i) {
            let _ = scan(&s[..i], "x", today(), &allow());
            let _ = scan(&s[i..], "x", today(), &allow());
        }
    }
    let _ = scan("%%%4", "x", today(), &allow());
    let _ = scan("𝟙𝟛𝟠𝟘𝟘𝟙𝟛𝟠𝟘𝟘𝟘", "x", today(), &allow());
}

proptest::proptest! {
    /// A keyword is in a field name exactly when the lower-cased name (cut
    /// at 48 bytes) contains it.
    #[test]
    fn keywords_in_field_names_are_found_as_contains_finds_them(
        name in "[a-zA-Z_身份证卡号手机]{0,60}",
        pick in 0usize..40,
    ) {
        let kws: Vec<&str> = [ID_KW, CARD_KW, PHONE_KW, IMEI_KW, PASSPORT_KW, ORDERISH, MAC_FIELDS]
            .concat();
        let kw = kws[pick % kws.len()];
        let f = FieldName::new(&name);
        let lower = String::from_utf8_lossy(&f.lower[..f.len]).into_owned();
        proptest::prop_assert_eq!(f.has(kw), lower.contains(kw), "{:?} {:?}", name, kw);
    }

    /// Any of a list in one pass, as a test of each keyword in turn says.
    #[test]
    fn any_of_the_order_keywords_is_found_as_each_in_turn_finds_it(
        name in "([a-zA-Z_]{0,6}(order|trade|waybill|tracking|sku|shop|sn|ord|tra|s)){0,5}[a-z身份证]{0,8}",
    ) {
        let f = FieldName::new(&name);
        proptest::prop_assert_eq!(
            f.has_any(ORDERISH, &ORDERISH_FIRSTS),
            ORDERISH.iter().any(|k| f.has(k)),
            "{:?}", name
        );
    }
}

#[test]
fn keywords_at_either_end_of_a_field_name() {
    for (name, kw, has) in [
        ("sn", "sn", true),
        ("xsn", "sn", true),
        ("snx", "sn", true),
        ("s", "sn", false),
        ("ns", "sn", false),
        ("ORDER_ID", "order", true),
        ("身份证号", "身份证", true),
        ("", "tel", false),
    ] {
        assert_eq!(FieldName::new(name).has(kw), has, "{name} {kw}");
    }
}
