//! The direct Avro datum decoder: a record's bytes read straight into the
//! reused model values, with no generic `Value` in between.
//!
//! Resolution is decided once per writer schema ([`Plan::event`],
//! [`Plan::consent`]): writer fields are matched to ours by name, a field
//! we lack becomes a skip, a field the writer lacks takes our default, enum
//! symbols are mapped by name, union branches are tabled. Decoding then
//! follows the plan, one hand-written function per record of ours.
//! A writer whose schema is our event schema itself (nearly every record
//! the daemon reads) skips the plan: `datum/exact.rs` reads its fields in order.
//!
//! The plan claims only what it reads exactly as apache-avro 0.21 does
//! (`avro::decode_event`, resolution then serde): the promotions int→long,
//! int/long→timestamp-millis, int→date and bytes→string, and defaults of
//! null, `false` and `[]`. A writer schema with anything else (a logical
//! type other than timestamp-millis and date in a field we skip, a map
//! read as a record, a long narrowed to an int, ...) gets no plan, and its
//! records go through apache-avro as before. A differential test and the
//! `avro` fuzz target hold the two to the same answers.
//!
//! One deliberate difference: apache-avro reads a union index, a boolean or
//! a string body at the very end of the input as null, so a record cut
//! short before its trailing nullable fields decodes there. Here a record
//! that ends early is refused (`Bad::EndOfInput`).
//!
//! Bounds, as on apache-avro's path (`avro::MAX_ALLOCATION`): a length or a
//! block's item count over 1 MiB is refused; nothing is reserved beyond the
//! bytes left; plans nest at most [`MAX_DEPTH`] deep (so decoding does
//! too); arrays of items written in no bytes get no plan.

use super::DecodeError;
use super::avro::MAX_ALLOCATION;
use crate::model::*;
use apache_avro::Schema;
use apache_avro::schema::{Name, Namespace, RecordSchema};
use std::collections::HashMap;
use std::fmt;

/// How deep a plan may nest (records in records, arrays, unions).
pub const MAX_DEPTH: usize = 32;

/// A writer schema's records resolved to one of our record schemas.
#[derive(Debug)]
pub struct Plan {
    op: Op,
    /// The writer's schema is ours: `exact::event` reads it, not `op`.
    exact: bool,
}

/// How one value written with the writer's schema is read.
#[derive(Debug)]
enum Op {
    Null,
    Bool,
    /// `int`, `date`, `time-millis`: a zigzag varint within `i32`.
    Int,
    /// `long` and the timestamp types.
    Long,
    Float,
    Double,
    /// An Avro `string`: UTF-8 is checked.
    Str,
    /// Avro `bytes` (read as our string, UTF-8 is checked then).
    Bytes,
    Fixed(usize),
    /// A writer enum: each writer symbol's index among ours, or [`NONE`].
    Enum(Box<[u8]>),
    Array(Box<Op>),
    Map(Box<Op>),
    Union(Box<[Op]>),
    Record(Box<Record>),
    /// A union branch our type cannot take: a record that uses it is refused.
    Refuse,
}

/// A writer symbol with no counterpart among ours (and no default).
const NONE: u8 = u8::MAX;

#[derive(Debug)]
struct Record {
    /// The writer's fields in order: into which of our fields (by position
    /// in our schema), or skipped.
    steps: Box<[Step]>,
    /// Our fields the writer lacks, by position: set to their defaults.
    absent: Box<[u8]>,
}

#[derive(Debug)]
struct Step {
    field: Option<u8>,
    op: Op,
}

impl Plan {
    /// The plan reading `writer`'s records as our `DataSharingEvent`, or
    /// `None` when only apache-avro can (see the module's documentation).
    pub fn event(writer: &Schema) -> Option<Plan> {
        let mut plan = Plan::new(writer, &super::avro::schemas().ok()?.event)?;
        plan.exact = exact::is_our_event_schema(writer);
        Some(plan)
    }

    /// Whether records are read on the exact path (the writer's schema is ours).
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// This plan followed step by step even where the exact path applies:
    /// the other side of the differential test and the `avro` fuzz target.
    pub fn step_by_step(mut self) -> Plan {
        self.exact = false;
        self
    }

    /// The plan reading `writer`'s records as our `ConsentState`.
    pub fn consent(writer: &Schema) -> Option<Plan> {
        Plan::new(writer, &super::avro::schemas().ok()?.consent)
    }

    fn new(writer: &Schema, reader: &Schema) -> Option<Plan> {
        let wr = apache_avro::schema::ResolvedSchema::try_from(writer).ok()?;
        let rr = apache_avro::schema::ResolvedSchema::try_from(reader).ok()?;
        let cx = Compile {
            writer: wr.get_names(),
            reader: rr.get_names(),
        };
        match cx.read(Side::top(writer), Side::top(reader), 0) {
            Ok(op @ Op::Record(_)) => Some(Plan { op, exact: false }),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Compiling a plan

/// Why a pair of schemas has no exact plan.
enum Why {
    /// apache-avro refuses every value of this writer type read as ours.
    Unreadable,
    /// Not claimed here: the whole schema goes to apache-avro.
    Unclaimed,
}

/// A schema and the namespace it sits in (for resolving references).
#[derive(Clone, Copy)]
struct Side<'a> {
    schema: &'a Schema,
    ns: &'a Namespace,
}

static NO_NAMESPACE: Namespace = None;

impl<'a> Side<'a> {
    fn top(schema: &'a Schema) -> Side<'a> {
        Side {
            schema,
            ns: &NO_NAMESPACE,
        }
    }
}

struct Compile<'a> {
    writer: &'a HashMap<Name, &'a Schema>,
    reader: &'a HashMap<Name, &'a Schema>,
}

/// A named type's schema in its own namespace; references followed.
fn deref<'a>(
    names: &'a HashMap<Name, &'a Schema>,
    s: Side<'a>,
    ns_store: &'a mut Namespace,
) -> Result<Side<'a>, Why> {
    match s.schema {
        Schema::Ref { name } => {
            let full = name.fully_qualified_name(s.ns);
            let schema = *names.get(&full).ok_or(Why::Unclaimed)?;
            *ns_store = full.namespace;
            Ok(Side {
                schema,
                ns: ns_store,
            })
        }
        Schema::Record(RecordSchema { name, .. }) => {
            *ns_store = name.fully_qualified_name(s.ns).namespace;
            Ok(Side {
                schema: s.schema,
                ns: ns_store,
            })
        }
        _ => Ok(s),
    }
}

impl Compile<'_> {
    /// How to read a value written as `w` into our `r`.
    fn read(&self, w: Side<'_>, r: Side<'_>, depth: usize) -> Result<Op, Why> {
        if depth > MAX_DEPTH {
            return Err(Why::Unclaimed);
        }
        let (mut wns, mut rns): (Namespace, Namespace) = (None, None);
        let w = deref(self.writer, w, &mut wns)?;
        let r = deref(self.reader, r, &mut rns)?;
        let next = depth + 1;
        match (w.schema, r.schema) {
            (Schema::Union(wu), Schema::Union(ru)) => {
                let some = nullable(ru)?;
                let branches = wu
                    .variants()
                    .iter()
                    .map(|b| match b {
                        Schema::Null => Ok(Op::Null),
                        b => self.branch(self.read(w.with(b), r.with(some), next)),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Op::Union(branches))
            }
            (Schema::Null, Schema::Union(ru)) => nullable(ru).map(|_| Op::Null),
            (_, Schema::Union(ru)) => self.read(w, r.with(nullable(ru)?), next),
            // apache-avro takes the branch's value and resolves it as ours.
            (Schema::Union(wu), _) => {
                let branches = wu
                    .variants()
                    .iter()
                    .map(|b| match b {
                        Schema::Null => Ok(Op::Refuse),
                        b => self.branch(self.read(w.with(b), r, next)),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Op::Union(branches))
            }
            (Schema::Null, _) => Err(Why::Unreadable),
            (Schema::String, Schema::String) => Ok(Op::Str),
            (Schema::Bytes, Schema::String) => Ok(Op::Bytes),
            (Schema::Boolean, Schema::Boolean) => Ok(Op::Bool),
            (Schema::Int, Schema::Int | Schema::Long | Schema::TimestampMillis | Schema::Date)
            | (Schema::Date, Schema::Date) => Ok(Op::Int),
            (Schema::Long, Schema::Long | Schema::TimestampMillis)
            | (Schema::TimestampMillis, Schema::TimestampMillis) => Ok(Op::Long),
            (Schema::Enum(we), Schema::Enum(re)) => {
                if re.symbols.len() >= usize::from(NONE) {
                    return Err(Why::Unclaimed);
                }
                let position = |s: &str| re.symbols.iter().position(|r| r == s);
                let fallback = re.default.as_deref().and_then(position);
                let map = we
                    .symbols
                    .iter()
                    .map(|s| {
                        position(s)
                            .or(fallback)
                            .and_then(|i| u8::try_from(i).ok())
                            .unwrap_or(NONE)
                    })
                    .collect();
                Ok(Op::Enum(map))
            }
            (Schema::Array(wa), Schema::Array(ra)) => {
                // An item type apache-avro refuses fails only the records
                // whose array has items.
                let item = match self.read(w.with(&wa.items), r.with(&ra.items), next) {
                    Ok(op) => op,
                    Err(Why::Unreadable) => Op::Refuse,
                    Err(Why::Unclaimed) => return Err(Why::Unclaimed),
                };
                weighty(Op::Array(Box::new(item)))
            }
            (Schema::Record(wr), Schema::Record(rr)) => {
                let mut seen = vec![false; rr.fields.len()];
                let mut steps = Vec::with_capacity(wr.fields.len());
                for wf in &wr.fields {
                    let step = match rr.fields.iter().position(|rf| rf.name == wf.name) {
                        Some(i) => {
                            seen[i] = true;
                            let op =
                                self.read(w.with(&wf.schema), r.with(&rr.fields[i].schema), next)?;
                            Step {
                                field: Some(u8::try_from(i).map_err(|_| Why::Unclaimed)?),
                                op,
                            }
                        }
                        None => Step {
                            field: None,
                            op: self.skip(w.with(&wf.schema), next)?,
                        },
                    };
                    steps.push(step);
                }
                let mut absent = Vec::new();
                for (i, rf) in rr.fields.iter().enumerate().filter(|(i, _)| !seen[*i]) {
                    if !plain_default(&rf.schema, rf.default.as_ref()) {
                        return Err(Why::Unclaimed);
                    }
                    absent.push(u8::try_from(i).map_err(|_| Why::Unclaimed)?);
                }
                Ok(Op::Record(Box::new(Record {
                    steps: steps.into(),
                    absent: absent.into(),
                })))
            }
            (w, r) if !apache_resolves(w, r) => Err(Why::Unreadable),
            _ => Err(Why::Unclaimed),
        }
    }

    fn branch(&self, op: Result<Op, Why>) -> Result<Op, Why> {
        match op {
            Err(Why::Unreadable) => Ok(Op::Refuse),
            other => other,
        }
    }

    /// How to step over a value written as `w` that we have no field for.
    fn skip(&self, w: Side<'_>, depth: usize) -> Result<Op, Why> {
        if depth > MAX_DEPTH {
            return Err(Why::Unclaimed);
        }
        let mut wns: Namespace = None;
        let w = deref(self.writer, w, &mut wns)?;
        let next = depth + 1;
        Ok(match w.schema {
            Schema::Null => Op::Null,
            Schema::Boolean => Op::Bool,
            Schema::Int | Schema::Date | Schema::TimeMillis => Op::Int,
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => Op::Long,
            Schema::Float => Op::Float,
            Schema::Double => Op::Double,
            Schema::Bytes => Op::Bytes,
            Schema::String => Op::Str,
            Schema::Fixed(f) => Op::Fixed(f.size),
            Schema::Duration => Op::Fixed(12),
            Schema::Enum(e) => Op::Enum(vec![NONE; e.symbols.len()].into()),
            Schema::Array(a) => weighty(Op::Array(Box::new(self.skip(w.with(&a.items), next)?)))?,
            Schema::Map(m) => Op::Map(Box::new(self.skip(w.with(&m.types), next)?)),
            Schema::Union(u) => Op::Union(
                u.variants()
                    .iter()
                    .map(|b| self.skip(w.with(b), next))
                    .collect::<Result<_, _>>()?,
            ),
            Schema::Record(r) => Op::Record(Box::new(Record {
                steps: r
                    .fields
                    .iter()
                    .map(|f| {
                        Ok(Step {
                            field: None,
                            op: self.skip(w.with(&f.schema), next)?,
                        })
                    })
                    .collect::<Result<_, _>>()?,
                absent: Box::new([]),
            })),
            // uuid, decimal, big-decimal: apache-avro checks their values
            // even in a field it then drops.
            _ => return Err(Why::Unclaimed),
        })
    }
}

impl<'a> Side<'a> {
    fn with(self, schema: &'a Schema) -> Side<'a> {
        Side {
            schema,
            ns: self.ns,
        }
    }
}

/// Whether apache-avro's resolution (`Value::resolve`) takes any value
/// written as `w` for our `r`: `false` means it refuses them all.
fn apache_resolves(w: &Schema, r: &Schema) -> bool {
    use Schema as S;
    match r {
        S::String => matches!(w, S::String | S::Bytes | S::Fixed(_)),
        S::Int | S::Long => matches!(w, S::Int | S::Long),
        S::Boolean => matches!(w, S::Boolean),
        S::Date => matches!(w, S::Date | S::Int),
        S::TimestampMillis => matches!(w, S::TimestampMillis | S::Long | S::Int),
        S::Enum(_) => matches!(w, S::Enum(_) | S::String),
        S::Record(_) => matches!(w, S::Record(_) | S::Map(_)),
        S::Array(_) => matches!(w, S::Array(_)),
        _ => true,
    }
}

/// Our unions are all `["null", T]`: `T`.
fn nullable(u: &apache_avro::schema::UnionSchema) -> Result<&Schema, Why> {
    match u.variants() {
        [Schema::Null, some] if !matches!(some, Schema::Null) => Ok(some),
        _ => Err(Why::Unclaimed),
    }
}

/// Arrays of items written in no bytes could make a few bytes cost
/// millions of steps: not claimed (and refused by `avro::usable_writer`).
fn weighty(array: Op) -> Result<Op, Why> {
    fn weightless(op: &Op) -> bool {
        match op {
            Op::Null | Op::Fixed(0) => true,
            Op::Record(r) => r.steps.iter().all(|s| weightless(&s.op)),
            _ => false,
        }
    }
    match &array {
        Op::Array(item) if weightless(item) => Err(Why::Unclaimed),
        _ => Ok(array),
    }
}

/// The defaults a plan sets itself: null for `["null", T]`, `false`, `[]`.
fn plain_default(schema: &Schema, default: Option<&serde_json::Value>) -> bool {
    use serde_json::Value as J;
    match (schema, default) {
        (Schema::Union(u), Some(J::Null)) => nullable(u).is_ok(),
        (Schema::Boolean, Some(J::Bool(false))) => true,
        (Schema::Array(_), Some(J::Array(a))) => a.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Reading

/// Why a datum was refused. No value of the record is quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The record ends before its last field.
    EndOfInput,
    Overlong,
    IntRange,
    Length(i64),
    Utf8,
    BoolByte,
    Branch {
        index: i64,
        of: usize,
    },
    Symbol {
        index: i64,
        of: usize,
    },
    NoSymbol,
    Unreadable,
    DateRange,
    LeftOver(usize),
    /// The plan does not fit the record it is applied to (a defect).
    Plan,
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::EndOfInput => f.write_str("the record ends early"),
            Bad::Overlong => f.write_str("a varint longer than 10 bytes"),
            Bad::IntRange => f.write_str("an int outside 32 bits"),
            Bad::Length(n) if *n < 0 => f.write_str("a negative length"),
            Bad::Length(n) => write!(f, "a length of {n}, over the bound of {MAX_ALLOCATION}"),
            Bad::Utf8 => f.write_str("a string that is not UTF-8"),
            Bad::BoolByte => f.write_str("a boolean byte that is neither 0 nor 1"),
            Bad::Branch { index, of } => write!(f, "union branch {index} of {of}"),
            Bad::Symbol { index, of } => write!(f, "enum symbol {index} of {of}"),
            Bad::NoSymbol => f.write_str("an enum symbol we do not have"),
            Bad::Unreadable => f.write_str("a union branch our schema cannot read"),
            Bad::DateRange => f.write_str("a date out of range"),
            Bad::LeftOver(n) => write!(f, "{n} bytes left over after the record"),
            Bad::Plan => f.write_str("the decoding plan does not fit (a defect)"),
        }
    }
}

type Res<T> = Result<T, Bad>;

/// The bytes of one datum, read front to back.
struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    #[inline]
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(Bad::EndOfInput);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    /// A zigzag varint, as apache-avro reads it (at most 10 bytes; bits
    /// past 64 dropped).
    #[inline(always)]
    fn long(&mut self) -> Res<i64> {
        // Lengths, indexes and small numbers: one byte.
        if let Some((&b, rest)) = self.bytes.split_first()
            && b < 0x80
        {
            self.bytes = rest;
            return Ok(i64::from(b >> 1) ^ -i64::from(b & 1));
        }
        self.long_slow()
    }

    fn long_slow(&mut self) -> Res<i64> {
        let mut z = 0u64;
        for j in 0..10 {
            let (&b, rest) = self.bytes.split_first().ok_or(Bad::EndOfInput)?;
            self.bytes = rest;
            z |= u64::from(b & 0x7F) << (j * 7);
            if b & 0x80 == 0 {
                return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        Err(Bad::Overlong)
    }

    #[inline]
    fn int(&mut self) -> Res<i32> {
        i32::try_from(self.long()?).map_err(|_| Bad::IntRange)
    }

    #[inline]
    fn bool(&mut self) -> Res<bool> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(Bad::BoolByte),
        }
    }

    #[inline]
    fn len(&mut self) -> Res<usize> {
        let n = self.long()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ALLOCATION)
            .ok_or(Bad::Length(n))
    }

    #[inline]
    fn bytes(&mut self) -> Res<&'a [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    #[inline]
    fn str(&mut self) -> Res<&'a str> {
        text(self.bytes()?).ok_or(Bad::Utf8)
    }

    /// An array or map block's item count; 0 ends it. A negative count is
    /// followed by the block's size in bytes, read and not trusted.
    #[inline]
    fn block(&mut self) -> Res<usize> {
        let n = self.long()?;
        let n = if n < 0 {
            self.long()?;
            n.checked_neg().ok_or(Bad::Length(n))?
        } else {
            n
        };
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= MAX_ALLOCATION)
            .ok_or(Bad::Length(n))
    }

    /// A union's branch.
    #[inline]
    fn branch<'p>(&mut self, branches: &'p [Op]) -> Res<&'p Op> {
        let index = self.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or(Bad::Branch {
                index,
                of: branches.len(),
            })
    }

    fn skip(&mut self, op: &Op) -> Res<()> {
        match op {
            Op::Null => {}
            Op::Bool => {
                self.bool()?;
            }
            Op::Int => {
                self.int()?;
            }
            Op::Long => {
                self.long()?;
            }
            Op::Float => {
                self.take(4)?;
            }
            Op::Double => {
                self.take(8)?;
            }
            Op::Str => {
                self.str()?;
            }
            Op::Bytes => {
                self.bytes()?;
            }
            Op::Fixed(n) => {
                self.take(*n)?;
            }
            Op::Enum(map) => {
                // Only the index's range: a dropped symbol needs no counterpart.
                let index = self.int()?;
                if usize::try_from(index).map_or(true, |i| i >= map.len()) {
                    return Err(Bad::Symbol {
                        index: i64::from(index),
                        of: map.len(),
                    });
                }
            }
            Op::Array(item) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.skip(item)?;
                }
            },
            Op::Map(value) => loop {
                let n = self.block()?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    self.str()?;
                    self.skip(value)?;
                }
            },
            Op::Union(branches) => {
                let b = self.branch(branches)?;
                self.skip(b)?;
            }
            Op::Record(r) => {
                for s in &r.steps {
                    self.skip(&s.op)?;
                }
            }
            Op::Refuse => return Err(Bad::Unreadable),
        }
        Ok(())
    }
}

/// `b` as text, if it is UTF-8. Most strings of an event are short and
/// ASCII (ids, codes, categories): one pass over their bytes; the others
/// go through simdutf8.
#[inline(always)]
fn text(b: &[u8]) -> Option<&str> {
    if ascii(b) {
        // SAFETY: every ASCII byte sequence is UTF-8.
        Some(unsafe { std::str::from_utf8_unchecked(b) })
    } else {
        utf8(b)
    }
}

/// Whether every byte is ASCII. Up to 16 bytes, two words (or two halves
/// under 8) that overlap rather than leave a tail of single bytes: std's
/// `is_ascii` walks strings under 16 bytes byte by byte, and most of an
/// event's strings are that short (ids, codes, regions).
#[inline(always)]
fn ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let n = b.len();
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    if n > 16 {
        // std's loop, a vector at a time, is the faster for these.
        b.is_ascii()
    } else if n >= 8 {
        (word(0) | word(n - 8)) & HIGH == 0
    } else if n >= 4 {
        let half = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        (half(0) | half(n - 4)) & 0x8080_8080 == 0
    } else {
        b.iter().fold(0, |a, &c| a | c) < 0x80
    }
}

/// Non-ASCII text checked with SIMD at any length. simdutf8's `from_utf8`
/// hands strings under 64 bytes to std, which walks them a character at
/// a time: Chinese names, addresses and memos, 4% of (c). Its AVX2
/// validator takes them in one padded block.
fn utf8(b: &[u8]) -> Option<&str> {
    #[cfg(target_arch = "x86_64")]
    if b.len() < 64 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above), all the validator needs.
        let valid = unsafe { simdutf8::basic::imp::x86::avx2::validate_utf8(b) };
        // SAFETY: validated as UTF-8 just now.
        return valid
            .ok()
            .map(|()| unsafe { std::str::from_utf8_unchecked(b) });
    }
    simdutf8::basic::from_utf8(b).ok()
}

/// A writer enum's symbol as the index of ours.
#[inline]
fn symbol(i: &mut Input<'_>, map: &[u8]) -> Res<usize> {
    let index = i.int()?;
    let ours = usize::try_from(index)
        .ok()
        .and_then(|x| map.get(x))
        .ok_or(Bad::Symbol {
            index: i64::from(index),
            of: map.len(),
        })?;
    match *ours {
        NONE => Err(Bad::NoSymbol),
        s => Ok(usize::from(s)),
    }
}

/// Follows a writer union to the branch written; any other op as it is.
#[inline]
fn resolved<'p>(i: &mut Input<'_>, op: &'p Op) -> Res<&'p Op> {
    match op {
        Op::Union(branches) => match i.branch(branches)? {
            Op::Refuse => Err(Bad::Unreadable),
            b => Ok(b),
        },
        Op::Refuse => Err(Bad::Unreadable),
        op => Ok(op),
    }
}

#[inline(always)]
fn string(i: &mut Input<'_>, op: &Op, out: &mut String) -> Res<()> {
    match resolved(i, op)? {
        Op::Str | Op::Bytes => {
            let s = i.str()?;
            out.clear();
            out.push_str(s);
            Ok(())
        }
        _ => Err(Bad::Plan),
    }
}

#[inline]
fn long(i: &mut Input<'_>, op: &Op) -> Res<i64> {
    match resolved(i, op)? {
        Op::Long => i.long(),
        Op::Int => i.int().map(i64::from),
        _ => Err(Bad::Plan),
    }
}

#[inline]
fn int(i: &mut Input<'_>, op: &Op) -> Res<i32> {
    match resolved(i, op)? {
        Op::Int => i.int(),
        _ => Err(Bad::Plan),
    }
}

#[inline]
fn boolean(i: &mut Input<'_>, op: &Op) -> Res<bool> {
    match resolved(i, op)? {
        Op::Bool => i.bool(),
        _ => Err(Bad::Plan),
    }
}

#[inline]
fn timestamp(i: &mut Input<'_>, op: &Op) -> Res<Timestamp> {
    long(i, op).map(Timestamp)
}

#[inline]
fn date(i: &mut Input<'_>, op: &Op) -> Res<Date> {
    Date::from_days_since_epoch(int(i, op)?.into()).ok_or(Bad::DateRange)
}

#[inline]
fn enumerated<T: Vocabulary>(i: &mut Input<'_>, op: &Op) -> Res<T> {
    match resolved(i, op)? {
        Op::Enum(map) => T::ALL.get(symbol(i, map)?).copied().ok_or(Bad::Plan),
        _ => Err(Bad::Plan),
    }
}

/// A `["null", T]` of ours: `None`, or `T` read into the value already
/// there (its allocations reused) or a fresh one.
#[inline]
fn optional<T>(
    i: &mut Input<'_>,
    op: &Op,
    out: &mut Option<T>,
    fresh: impl FnOnce() -> T,
    read: impl FnOnce(&mut Input<'_>, &Op, &mut T) -> Res<()>,
) -> Res<()> {
    let op = match op {
        Op::Union(branches) => i.branch(branches)?,
        op => op,
    };
    match op {
        Op::Null => {
            *out = None;
            Ok(())
        }
        Op::Refuse => Err(Bad::Unreadable),
        op => read(i, op, out.get_or_insert_with(fresh)),
    }
}

#[inline]
fn record<'p>(i: &mut Input<'_>, op: &'p Op) -> Res<&'p Record> {
    match resolved(i, op)? {
        Op::Record(r) => Ok(r),
        _ => Err(Bad::Plan),
    }
}

/// An array of ours, read into the items already there (reused) and
/// fresh ones past them.
#[inline]
fn array<T>(
    i: &mut Input<'_>,
    op: &Op,
    out: &mut Vec<T>,
    fresh: impl Fn() -> T,
    read: impl Fn(&mut Input<'_>, &Op, &mut T) -> Res<()>,
) -> Res<()> {
    let Op::Array(item) = resolved(i, op)? else {
        return Err(Bad::Plan);
    };
    blocks(i, out, fresh, |i, x| read(i, item, x))
}

/// An array's blocks of items, read by `read` into the items already in
/// `out` (reused) and fresh ones past them; `out` is cut to the items read.
#[inline(always)]
fn blocks<T>(
    i: &mut Input<'_>,
    out: &mut Vec<T>,
    fresh: impl Fn() -> T,
    read: impl Fn(&mut Input<'_>, &mut T) -> Res<()>,
) -> Res<()> {
    let mut n = 0;
    loop {
        let count = i.block()?;
        if count == 0 {
            break;
        }
        // Every item takes a byte at least (`weighty`).
        out.reserve(count.min(i.bytes.len()).saturating_sub(out.len() - n));
        for _ in 0..count {
            if n == out.len() {
                out.push(fresh());
            }
            read(i, &mut out[n])?;
            n += 1;
        }
    }
    out.truncate(n);
    Ok(())
}

/// Runs a record's steps: `set` reads one of our fields by position, and
/// `default` sets one the writer lacks.
#[inline]
fn fields<T>(
    i: &mut Input<'_>,
    r: &Record,
    out: &mut T,
    set: impl Fn(&mut Input<'_>, usize, &Op, &mut T) -> Res<()>,
    default: impl Fn(usize, &mut T) -> Res<()>,
) -> Res<()> {
    for s in &r.steps {
        match s.field {
            Some(f) => set(i, usize::from(f), &s.op, out)?,
            None => i.skip(&s.op)?,
        }
    }
    for &f in &r.absent {
        default(usize::from(f), out)?;
    }
    Ok(())
}

fn event(i: &mut Input<'_>, op: &Op, e: &mut DataSharingEvent) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        e,
        |i, f, op, e| {
            match f {
                0 => string(i, op, &mut e.event_id)?,
                1 => e.occurred_at = timestamp(i, op)?,
                2 => string(i, op, &mut e.source_service)?,
                3 => e.flow = enumerated(i, op)?,
                4 => subject(i, op, &mut e.subject)?,
                5 => recipient(i, op, &mut e.recipient)?,
                6 => e.purpose = enumerated(i, op)?,
                7 => e.legal_basis = enumerated(i, op)?,
                8 => optional(i, op, &mut e.order, Order::empty, order)?,
                9 => array(i, op, &mut e.data, fresh_item, data_item)?,
                10 => e.record_count = long(i, op)?,
                11 => transport(i, op, &mut e.transport)?,
                12 => optional(i, op, &mut e.legal_document, LegalDocument::empty, document)?,
                13 => optional(i, op, &mut e.files_encrypted, || false, flag)?,
                14 => optional(i, op, &mut e.agreement_ref, String::new, string)?,
                15 => optional(i, op, &mut e.consent_ref, String::new, string)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, e| {
            match f {
                8 => e.order = None,
                12 => e.legal_document = None,
                13 => e.files_encrypted = None,
                14 => e.agreement_ref = None,
                15 => e.consent_ref = None,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

fn flag(i: &mut Input<'_>, op: &Op, out: &mut bool) -> Res<()> {
    *out = boolean(i, op)?;
    Ok(())
}

fn small(i: &mut Input<'_>, op: &Op, out: &mut i32) -> Res<()> {
    *out = int(i, op)?;
    Ok(())
}

fn subject(i: &mut Input<'_>, op: &Op, s: &mut Subject) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        s,
        |i, f, op, s| {
            match f {
                0 => string(i, op, &mut s.user_id)?,
                1 => s.role = enumerated(i, op)?,
                2 => optional(i, op, &mut s.age, || 0, small)?,
                3 => optional(i, op, &mut s.guardian_consent, || false, flag)?,
                4 => optional(i, op, &mut s.third_party_authorized, || false, flag)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, s| {
            match f {
                2 => s.age = None,
                3 => s.guardian_consent = None,
                4 => s.third_party_authorized = None,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

fn recipient(i: &mut Input<'_>, op: &Op, r: &mut Recipient) -> Res<()> {
    let plan = record(i, op)?;
    fields(
        i,
        plan,
        r,
        |i, f, op, r| {
            match f {
                0 => string(i, op, &mut r.id)?,
                1 => r.category = enumerated(i, op)?,
                2 => string(i, op, &mut r.region)?,
                3 => optional(i, op, &mut r.acting_for_merchant, String::new, string)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, r| match f {
            3 => {
                r.acting_for_merchant = None;
                Ok(())
            }
            _ => Err(Bad::Plan),
        },
    )
}

fn order(i: &mut Input<'_>, op: &Op, o: &mut Order) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        o,
        |i, f, op, o| {
            match f {
                0 => string(i, op, &mut o.id)?,
                1 => o.order_type = enumerated(i, op)?,
                2 => string(i, op, &mut o.merchant_id)?,
                3 => o.cash_on_delivery = boolean(i, op)?,
                4 => o.insured = boolean(i, op)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, o| {
            match f {
                3 => o.cash_on_delivery = false,
                4 => o.insured = false,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

fn fresh_item() -> DataItem {
    DataItem {
        field: String::new(),
        category: None,
        value: None,
    }
}

fn data_item(i: &mut Input<'_>, op: &Op, d: &mut DataItem) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        d,
        |i, f, op, d| {
            match f {
                0 => string(i, op, &mut d.field)?,
                1 => optional(i, op, &mut d.category, String::new, string)?,
                2 => optional(i, op, &mut d.value, String::new, string)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, d| {
            match f {
                1 => d.category = None,
                2 => d.value = None,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

fn transport(i: &mut Input<'_>, op: &Op, t: &mut Transport) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        t,
        |i, f, op, t| {
            match f {
                0 => t.encrypted = boolean(i, op)?,
                1 => optional(i, op, &mut t.protocol, String::new, string)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, t| match f {
            1 => {
                t.protocol = None;
                Ok(())
            }
            _ => Err(Bad::Plan),
        },
    )
}

fn document(i: &mut Input<'_>, op: &Op, d: &mut LegalDocument) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        d,
        |i, f, op, d| match f {
            0 => string(i, op, &mut d.doc_type),
            1 => string(i, op, &mut d.reference),
            _ => Err(Bad::Plan),
        },
        |_, _| Err(Bad::Plan),
    )
}

fn consent(i: &mut Input<'_>, op: &Op, c: &mut ConsentState) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        c,
        |i, f, op, c| {
            match f {
                0 => string(i, op, &mut c.user_id)?,
                1 => c.updated_at = timestamp(i, op)?,
                2 => c.account_status = enumerated(i, op)?,
                3 => c.consent_withdrawn = boolean(i, op)?,
                4 => array(
                    i,
                    op,
                    &mut c.withdrawn_purposes,
                    || Purpose::ALL[0],
                    |i, op, p| {
                        *p = enumerated(i, op)?;
                        Ok(())
                    },
                )?,
                5 => c.personalized_ads_opt_out = boolean(i, op)?,
                6 => c.personalized_recommendation_opt_out = boolean(i, op)?,
                7 => array(i, op, &mut c.separate_consents, fresh_separate, separate)?,
                8 => optional(
                    i,
                    op,
                    &mut c.birth_date,
                    || Date(Default::default()),
                    |i, op, d| {
                        *d = date(i, op)?;
                        Ok(())
                    },
                )?,
                9 => optional(i, op, &mut c.guardian_consent, || false, flag)?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, c| {
            match f {
                3 => c.consent_withdrawn = false,
                4 => c.withdrawn_purposes.clear(),
                5 => c.personalized_ads_opt_out = false,
                6 => c.personalized_recommendation_opt_out = false,
                7 => c.separate_consents.clear(),
                8 => c.birth_date = None,
                9 => c.guardian_consent = None,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

fn fresh_separate() -> SeparateConsent {
    SeparateConsent {
        scope: ConsentScope::ALL[0],
        recipient_id: String::new(),
        purpose: None,
        categories: Vec::new(),
        granted_at: Timestamp(0),
        withdrawn_at: None,
    }
}

fn separate(i: &mut Input<'_>, op: &Op, s: &mut SeparateConsent) -> Res<()> {
    let r = record(i, op)?;
    fields(
        i,
        r,
        s,
        |i, f, op, s| {
            match f {
                0 => s.scope = enumerated(i, op)?,
                1 => string(i, op, &mut s.recipient_id)?,
                2 => optional(
                    i,
                    op,
                    &mut s.purpose,
                    || Purpose::ALL[0],
                    |i, op, p| {
                        *p = enumerated(i, op)?;
                        Ok(())
                    },
                )?,
                3 => array(i, op, &mut s.categories, String::new, string)?,
                4 => s.granted_at = timestamp(i, op)?,
                5 => optional(
                    i,
                    op,
                    &mut s.withdrawn_at,
                    || Timestamp(0),
                    |i, op, t| {
                        *t = timestamp(i, op)?;
                        Ok(())
                    },
                )?,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
        |f, s| {
            match f {
                2 => s.purpose = None,
                3 => s.categories.clear(),
                5 => s.withdrawn_at = None,
                _ => return Err(Bad::Plan),
            }
            Ok(())
        },
    )
}

/// Reads a whole datum with `read`; bytes after it are an error.
fn whole<T>(
    bytes: &[u8],
    out: &mut T,
    read: impl FnOnce(&mut Input<'_>, &mut T) -> Res<()>,
) -> Res<()> {
    let mut i = Input { bytes };
    read(&mut i, out)?;
    match i.bytes.len() {
        0 => Ok(()),
        n => Err(Bad::LeftOver(n)),
    }
}

/// Reads an event datum into `event` (its allocations reused), as `plan`
/// says; the datum only, no validation.
pub fn read_event(bytes: &[u8], plan: &Plan, event: &mut DataSharingEvent) -> Result<(), Bad> {
    if plan.exact {
        return whole(bytes, event, exact::event);
    }
    whole(bytes, event, |i, e| event_record(i, &plan.op, e))
}

/// Reads a consent datum into `state`, as `plan` says; no validation.
pub fn read_consent(bytes: &[u8], plan: &Plan, state: &mut ConsentState) -> Result<(), Bad> {
    whole(bytes, state, |i, s| consent(i, &plan.op, s))
}

fn event_record(i: &mut Input<'_>, op: &Op, e: &mut DataSharingEvent) -> Res<()> {
    event(i, op, e)
}

/// Decodes and validates an event datum into `event`, as
/// `avro::decode_event` does with the plan's writer schema.
pub fn decode_event_into(
    bytes: &[u8],
    plan: &Plan,
    event: &mut DataSharingEvent,
) -> Result<(), DecodeError> {
    read_event(bytes, plan, event).map_err(|b| DecodeError::Avro(b.to_string()))?;
    event.problems().into_result().map_err(DecodeError::Invalid)
}

/// Decodes and validates a consent datum.
pub fn decode_consent(bytes: &[u8], plan: &Plan) -> Result<ConsentState, DecodeError> {
    let mut c = ConsentState::empty();
    read_consent(bytes, plan, &mut c).map_err(|b| DecodeError::Avro(b.to_string()))?;
    c.problems().into_result().map_err(DecodeError::Invalid)?;
    Ok(c)
}

mod exact;
#[cfg(test)]
mod tests;
