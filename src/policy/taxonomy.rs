//! Data categories (`taxonomy.md`) as the engine uses them: dense ids, bit
//! sets, the field-name vocabulary, and `family.*` patterns.

use rustc_hash::FxHashMap;
use std::fmt;

/// A category's index in the policy's taxonomy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CatId(pub u16);

/// The most categories a taxonomy may hold (the width of [`CatSet`]).
pub const MAX_CATEGORIES: usize = 256;

/// A set of categories, as a 256-bit mask.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CatSet([u64; 4]);

impl CatSet {
    pub const EMPTY: CatSet = CatSet([0; 4]);

    pub fn all(n: usize) -> CatSet {
        let mut s = CatSet::EMPTY;
        for i in 0..n.min(MAX_CATEGORIES) {
            s.insert(CatId(i as u16));
        }
        s
    }

    /// The set of `c` alone, built word by word: a value that stays in
    /// registers. `insert` into a set that is then read whole makes the
    /// CPU wait for the narrow store to reach the wide load (store
    /// forwarding fails), which was 2% of judging an event.
    pub fn of(c: CatId) -> CatSet {
        let word = usize::from(c.0 >> 6);
        let bit = 1u64 << (c.0 & 63);
        CatSet(std::array::from_fn(|i| if i == word { bit } else { 0 }))
    }

    pub fn insert(&mut self, c: CatId) {
        self.0[usize::from(c.0 >> 6)] |= 1 << (c.0 & 63);
    }

    pub fn contains(&self, c: CatId) -> bool {
        self.0[usize::from(c.0 >> 6)] & (1 << (c.0 & 63)) != 0
    }

    pub fn union(self, o: CatSet) -> CatSet {
        CatSet(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }

    pub fn intersect(self, o: CatSet) -> CatSet {
        CatSet(std::array::from_fn(|i| self.0[i] & o.0[i]))
    }

    pub fn minus(self, o: CatSet) -> CatSet {
        CatSet(std::array::from_fn(|i| self.0[i] & !o.0[i]))
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn iter(self) -> impl Iterator<Item = CatId> {
        (0..4).flat_map(move |w| {
            let mut bits = self.0[w];
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                Some(CatId((w as u16) << 6 | b as u16))
            })
        })
    }
}

impl fmt::Debug for CatSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(|c| c.0)).finish()
    }
}

/// The compiled taxonomy of a policy.
#[derive(Debug, Clone, Default)]
pub struct Taxonomy {
    ids: Vec<String>,
    by_id: FxHashMap<String, CatId>,
    sensitive: CatSet,
    /// Field names, both as written and normalised (see [`normalise_field`]).
    fields: FxHashMap<String, CatId>,
}

impl Taxonomy {
    /// Adds a category; `Err` with the reason when it cannot be added.
    pub fn add(&mut self, id: &str, sensitive: bool) -> Result<CatId, String> {
        if self.by_id.contains_key(id) {
            return Err(format!("category `{id}` is defined twice"));
        }
        if !is_category_id(id) {
            return Err(format!(
                "`{id}` is not a category id (lower-case `family.name`)"
            ));
        }
        if self.ids.len() >= MAX_CATEGORIES {
            return Err(format!(
                "a taxonomy holds at most {MAX_CATEGORIES} categories"
            ));
        }
        let c = CatId(self.ids.len() as u16);
        self.ids.push(id.to_owned());
        self.by_id.insert(id.to_owned(), c);
        if sensitive {
            self.sensitive.insert(c);
        }
        Ok(c)
    }

    /// Maps a field name to a category; `Err` names the category it already has.
    pub fn add_field(&mut self, name: &str, c: CatId) -> Result<(), String> {
        for key in [name.to_owned(), normalise_field(name)] {
            if let Some(&prev) = self.fields.get(&key)
                && prev != c
            {
                return Err(format!(
                    "field name `{name}` already maps to `{}`",
                    self.name(prev)
                ));
            }
            self.fields.insert(key, c);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<CatId> {
        self.by_id.get(id).copied()
    }

    pub fn name(&self, c: CatId) -> &str {
        self.ids.get(usize::from(c.0)).map_or("?", String::as_str)
    }

    pub fn sensitive(&self) -> CatSet {
        self.sensitive
    }

    /// `*` (every category), `@sensitive` (those marked sensitive), `family.*` (every category of the family) or an
    /// exact id. `None` when it names nothing.
    pub fn pattern(&self, p: &str) -> Option<CatSet> {
        if p == "*" {
            return Some(CatSet::all(self.ids.len()));
        }
        if p == "@sensitive" {
            return Some(self.sensitive);
        }
        if let Some(family) = p.strip_suffix(".*") {
            let mut s = CatSet::EMPTY;
            for (i, id) in self.ids.iter().enumerate() {
                if id
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('.'))
                {
                    s.insert(CatId(i as u16));
                }
            }
            return (!s.is_empty()).then_some(s);
        }
        self.get(p).map(|c| {
            let mut s = CatSet::EMPTY;
            s.insert(c);
            s
        })
    }

    /// The category a field name stands for, as written or normalised.
    pub fn classify_field(&self, name: &str) -> Option<CatId> {
        if let Some(&c) = self.fields.get(name) {
            return Some(c);
        }
        // Most names are short ASCII: normalised on the stack, as
        // `normalise_field` would (one look-up per undeclared item, so no
        // allocation for it).
        let mut buf = [0u8; 64];
        if name.is_ascii() && name.len() <= buf.len() {
            let mut n = 0;
            for b in name.bytes().filter(|&b| b != b'_' && b != b'-') {
                buf[n] = b.to_ascii_lowercase();
                n += 1;
            }
            let key = std::str::from_utf8(&buf[..n]).ok()?;
            return self.fields.get(key).copied();
        }
        self.fields.get(&normalise_field(name)).copied()
    }

    pub fn ids(&self) -> impl Iterator<Item = (CatId, &str)> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, s)| (CatId(i as u16), s.as_str()))
    }
}

/// `receiverName`, `receiver_name`, `Receiver-Name` all become `receivername`.
pub fn normalise_field(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// `family.name`: lower-case ASCII letters, digits and `_`, one dot.
pub fn is_category_id(id: &str) -> bool {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    matches!(id.split_once('.'), Some((a, b)) if ok(a) && ok(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_of_one_is_the_empty_set_with_it_inserted() {
        for c in 0..MAX_CATEGORIES as u16 {
            let mut s = CatSet::EMPTY;
            s.insert(CatId(c));
            assert_eq!(CatSet::of(CatId(c)), s, "{c}");
            assert_eq!(CatSet::of(CatId(c)).iter().collect::<Vec<_>>(), [CatId(c)]);
        }
    }

    fn tax() -> Taxonomy {
        let mut t = Taxonomy::default();
        let a = t.add("identity.real_name", false).unwrap();
        t.add("identity.id_card_number", true).unwrap();
        t.add("contact.phone", false).unwrap();
        t.add_field("receiver_name", a).unwrap();
        t
    }

    #[test]
    fn patterns_name_families_exact_ids_or_everything() {
        let t = tax();
        assert_eq!(t.pattern("identity.*").unwrap().iter().count(), 2);
        assert_eq!(t.pattern("contact.phone").unwrap().iter().count(), 1);
        assert_eq!(t.pattern("*").unwrap().iter().count(), 3);
        assert!(t.pattern("health.*").is_none() && t.pattern("identity.nope").is_none());
        // `identity.*` must not match `identityx.y`.
        let mut t2 = tax();
        t2.add("identityx.y", false).unwrap();
        assert_eq!(t2.pattern("identity.*").unwrap().iter().count(), 2);
    }

    #[test]
    fn field_names_match_whatever_their_case_style() {
        let t = tax();
        let name = t.get("identity.real_name");
        assert_eq!(t.classify_field("receiver_name"), name);
        assert_eq!(t.classify_field("receiverName"), name);
        assert_eq!(t.classify_field("Receiver-Name"), name);
        assert_eq!(t.classify_field("receiver_phone"), None);
    }

    /// The stack path for short ASCII names reads as `normalise_field` does.
    fn classify_slowly(t: &Taxonomy, name: &str) -> Option<CatId> {
        t.fields
            .get(name)
            .or_else(|| t.fields.get(&normalise_field(name)))
            .copied()
    }

    #[test]
    fn field_names_read_on_the_stack_as_normalise_field_reads_them() {
        let mut t = tax();
        let long = "a".repeat(70);
        t.add_field(&long, t.get("contact.phone").unwrap()).unwrap();
        for name in [
            "",
            "_",
            "-_-",
            "RECEIVER_NAME",
            "receiver__name",
            "ReceiverNAME",
            "receiver name",
            "Receiver-Näme",
            "İreceivername",
            &long,
            &long.to_uppercase(),
            &"a".repeat(64),
            &format!("{}_", "a".repeat(64)),
            &format!("_{long}-"),
        ] {
            assert_eq!(
                t.classify_field(name),
                classify_slowly(&t, name),
                "{name:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_field_name_classifies_as_normalise_field_says(name in "[a-zA-Z_\\- İé]{0,80}") {
            let mut t = tax();
            t.add_field(&"a".repeat(66), t.get("contact.phone").unwrap()).unwrap();
            proptest::prop_assert_eq!(t.classify_field(&name), classify_slowly(&t, &name));
        }
    }

    #[test]
    fn bad_definitions_are_refused_with_a_reason() {
        let mut t = tax();
        assert!(
            t.add("identity.real_name", false)
                .unwrap_err()
                .contains("twice")
        );
        assert!(t.add("Identity", false).is_err());
        let c = t.get("contact.phone").unwrap();
        assert!(
            t.add_field("receiverName", c)
                .unwrap_err()
                .contains("already maps to `identity.real_name`")
        );
    }

    #[test]
    fn set_operations() {
        let mut a = CatSet::EMPTY;
        a.insert(CatId(3));
        a.insert(CatId(200));
        let mut b = CatSet::EMPTY;
        b.insert(CatId(200));
        assert_eq!(a.intersect(b), b);
        assert_eq!(a.minus(b).iter().collect::<Vec<_>>(), vec![CatId(3)]);
        assert_eq!(
            a.union(b).iter().collect::<Vec<_>>(),
            vec![CatId(3), CatId(200)]
        );
    }
}
