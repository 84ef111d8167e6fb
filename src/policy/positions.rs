//! Where each node of a YAML document starts, by path, so that a semantic
//! error ("`health.*` is both allowed and never") can name the line and
//! column of what the operator wrote.
//!
//! Paths are `/`-separated keys and indexes: `/registry/alipay/licensed`,
//! `/recipient_categories/merchant/never/2`. Keys may contain dots (rule and
//! category ids do), which is why the separator is `/`.

use rustc_hash::FxHashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub struct Positions(FxHashMap<String, Position>);

impl Positions {
    /// Positions of every node; an empty map when the text is not YAML (the
    /// typed parse reports that error with its own position).
    pub fn of(text: &str) -> Positions {
        let mut c = Collector::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut c, false).is_err() {
            return Positions::default();
        }
        Positions(c.out)
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.0.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) if i > 0 => p = &p[..i],
                _ => return Position { line: 1, column: 1 },
            }
        }
    }
}

enum Frame {
    /// A mapping, and the key whose value is being read, if any.
    Map(Option<String>),
    /// A sequence, and the index of the next item.
    Seq(usize),
}

#[derive(Default)]
struct Collector {
    stack: Vec<Frame>,
    out: FxHashMap<String, Position>,
}

impl Collector {
    fn path(&self) -> String {
        let mut p = String::new();
        for f in &self.stack {
            match f {
                Frame::Map(Some(k)) => {
                    p.push('/');
                    p.push_str(k);
                }
                Frame::Seq(i) => {
                    p.push('/');
                    p.push_str(&i.to_string());
                }
                Frame::Map(None) => {}
            }
        }
        p
    }

    fn at(mark: Marker) -> Position {
        Position {
            line: mark.line(),
            column: mark.col() + 1,
        }
    }

    /// A node begins. Returns true when it was a mapping key.
    fn begin(&mut self, key: Option<&str>, mark: Marker) -> bool {
        match self.stack.last_mut() {
            Some(Frame::Map(slot @ None)) => {
                // A key: its position stands for the entry.
                *slot = Some(key.unwrap_or("?").to_owned());
                let path = self.path();
                self.out.insert(path, Self::at(mark));
                true
            }
            Some(Frame::Seq(_)) => {
                let path = self.path();
                self.out.insert(path, Self::at(mark));
                false
            }
            _ => false,
        }
    }

    /// A scalar or alias: a key, or a whole value.
    fn leaf(&mut self, text: Option<&str>, mark: Marker) {
        let was_key = self.begin(text, mark);
        if !was_key {
            self.end_value();
        }
    }

    /// A value (scalar or whole container) has ended.
    fn end_value(&mut self) {
        match self.stack.last_mut() {
            Some(Frame::Map(slot)) => *slot = None,
            Some(Frame::Seq(i)) => *i += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(s, ..) => self.leaf(Some(&s), mark),
            Event::Alias(_) => self.leaf(None, mark),
            Event::MappingStart(..) => {
                self.begin(None, mark);
                self.stack.push(Frame::Map(None));
            }
            Event::SequenceStart(..) => {
                self.begin(None, mark);
                self.stack.push(Frame::Seq(0));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                self.end_value();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_point_at_keys_and_items() {
        let text = "a:\n  b.c: 1\n  list:\n    - x\n    - {k: v}\nrules:\n  minor.no_guardian_consent:\n    severity: high\n";
        let p = Positions::of(text);
        assert_eq!(p.find("/a/b.c"), Position { line: 2, column: 3 });
        assert_eq!(p.find("/a/list/1"), Position { line: 5, column: 7 });
        assert_eq!(p.find("/a/list/1/k"), Position { line: 5, column: 8 });
        assert_eq!(
            p.find("/rules/minor.no_guardian_consent/severity"),
            Position { line: 8, column: 5 }
        );
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(p.find("/a/list/7"), Position { line: 3, column: 3 });
    }

    #[test]
    fn broken_yaml_gives_an_empty_map_not_a_panic() {
        let p = Positions::of("a: [\n");
        assert_eq!(p.find("/a"), Position { line: 1, column: 1 });
    }
}
