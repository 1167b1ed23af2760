//! Calico label selectors: the expressions in `nodeSelector` and `peerSelector`.
//!
//! Grammar (whitespace between tokens is free; values in single or double quotes, no escapes):
//!
//! ```text
//! selector := or | ""                      (empty selects everything, like all())
//! or       := and ( "||" and )*
//! and      := unary ( "&&" unary )*
//! unary    := "!" unary | primary
//! primary  := "(" or ")" | "all()" | "has(" key ")"
//!           | key "==" value | key "!=" value
//!           | key "in" set | key "not" "in" set
//!           | key "contains" value | key "starts" "with" value | key "ends" "with" value
//! set      := "{" [ value ( "," value )* ] "}"
//! key      := [A-Za-z0-9_./-]+             (label keys such as kubernetes.io/hostname)
//! ```
//!
//! `&&` binds tighter than `||`. `key != v` and `key not in {..}` also match when the label is
//! absent; the other operators need the label. [`Selector`]'s `Display` gives a canonical string
//! that parses back to the same selector.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A parsed label selector. `And` and `Or` hold two or more operands; the parser flattens
/// nested chains (`a && (b && c)` is `And[a, b, c]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// `all()`: matches everything.
    All,
    /// `has(key)`: the label is present.
    Has(String),
    /// `key == "value"`.
    Eq(String, String),
    /// `key != "value"` (also true when the label is absent).
    Ne(String, String),
    /// `key in {"a", "b"}`.
    In(String, BTreeSet<String>),
    /// `key not in {"a", "b"}` (also true when the label is absent).
    NotIn(String, BTreeSet<String>),
    /// `key contains "s"`.
    Contains(String, String),
    /// `key starts with "s"`.
    StartsWith(String, String),
    /// `key ends with "s"`.
    EndsWith(String, String),
    /// `!expr`.
    Not(Box<Selector>),
    /// `a && b && ...`.
    And(Vec<Selector>),
    /// `a || b || ...`.
    Or(Vec<Selector>),
}

/// A selector that does not parse: where, and what was expected there.
///
/// Display: `invalid selector "rack == ": expected a quoted value at position 8, found end of
/// input` (positions count characters from 0).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {selector:?}: {}", self.detail())]
pub struct SelectorError {
    /// The whole selector text.
    pub selector: String,
    /// Character offset (from 0) of the problem.
    pub position: usize,
    /// What the parser expected there, e.g. `a quoted value`.
    pub expected: String,
    /// What it found, e.g. `"=="` or `end of input`.
    pub found: String,
}

impl SelectorError {
    /// The message without the selector text: `expected a quoted value at position 8, found end
    /// of input`.
    pub fn detail(&self) -> String {
        format!(
            "expected {} at position {}, found {}",
            self.expected, self.position, self.found
        )
    }
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread character.
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    /// Consumes `tok` (after whitespace) if it is next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    /// Consumes the keyword `word` if it is next and not followed by a key character.
    fn eat_word(&mut self, word: &str) -> bool {
        self.skip_ws();
        let r = self.rest();
        if r.starts_with(word) && !r[word.len()..].starts_with(is_key_char) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn error(&mut self, expected: &str) -> SelectorError {
        self.skip_ws();
        let r = self.rest();
        let found = if r.is_empty() {
            "end of input".to_string()
        } else {
            let tok: String = if r.starts_with(is_key_char) {
                r.chars().take_while(|c| is_key_char(*c)).collect()
            } else if ["==", "!=", "&&", "||"].iter().any(|op| r.starts_with(op)) {
                r[..2].to_string()
            } else {
                r.chars().take(1).collect()
            };
            format!("{tok:?}")
        };
        SelectorError {
            selector: self.src.to_string(),
            position: self.src[..self.pos].chars().count(),
            expected: expected.to_string(),
            found,
        }
    }

    fn or(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.and()?];
        while self.eat("||") {
            terms.push(self.and()?);
        }
        Ok(flatten(terms, true))
    }

    fn and(&mut self) -> Result<Selector, SelectorError> {
        let mut terms = vec![self.unary()?];
        while self.eat("&&") {
            terms.push(self.unary()?);
        }
        Ok(flatten(terms, false))
    }

    fn unary(&mut self) -> Result<Selector, SelectorError> {
        self.skip_ws();
        if self.rest().starts_with('!') && !self.rest().starts_with("!=") {
            self.pos += 1;
            return Ok(Selector::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn key(&mut self, expected: &str) -> Result<String, SelectorError> {
        self.skip_ws();
        let r = self.rest();
        let len = r.len() - r.trim_start_matches(is_key_char).len();
        if len == 0 {
            return Err(self.error(expected));
        }
        self.pos += len;
        Ok(r[..len].to_string())
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let r = self.rest();
        let Some(q) = r.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            return Err(self.error("a quoted value"));
        };
        match r[1..].find(q) {
            Some(end) => {
                self.pos += end + 2;
                Ok(r[1..=end].to_string())
            }
            None => Err(self.error(&format!("a value closed by {q}"))),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        if !self.eat("{") {
            return Err(self.error("'{' starting a set of values"));
        }
        let mut set = BTreeSet::new();
        if self.eat("}") {
            return Ok(set);
        }
        loop {
            set.insert(self.value()?);
            if self.eat("}") {
                return Ok(set);
            }
            if !self.eat(",") {
                return Err(self.error("',' or '}'"));
            }
        }
    }

    fn primary(&mut self) -> Result<Selector, SelectorError> {
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("')'"));
            }
            return Ok(inner);
        }
        let key = self.key("a label key, has(..), all(), '!' or '('")?;
        if key == "all" && self.eat("(") {
            if !self.eat(")") {
                return Err(self.error("')' after all("));
            }
            return Ok(Selector::All);
        }
        if key == "has" && self.eat("(") {
            let k = self.key("a label key")?;
            if !self.eat(")") {
                return Err(self.error("')' closing has("));
            }
            return Ok(Selector::Has(k));
        }
        if self.eat("==") {
            return Ok(Selector::Eq(key, self.value()?));
        }
        if self.eat("!=") {
            return Ok(Selector::Ne(key, self.value()?));
        }
        if self.eat_word("in") {
            return Ok(Selector::In(key, self.set()?));
        }
        if self.eat_word("not") {
            if !self.eat_word("in") {
                return Err(self.error("'in' after 'not'"));
            }
            return Ok(Selector::NotIn(key, self.set()?));
        }
        if self.eat_word("contains") {
            return Ok(Selector::Contains(key, self.value()?));
        }
        if self.eat_word("starts") {
            if !self.eat_word("with") {
                return Err(self.error("'with' after 'starts'"));
            }
            return Ok(Selector::StartsWith(key, self.value()?));
        }
        if self.eat_word("ends") {
            if !self.eat_word("with") {
                return Err(self.error("'with' after 'ends'"));
            }
            return Ok(Selector::EndsWith(key, self.value()?));
        }
        Err(self.error("an operator (==, !=, in, not in, contains, starts with, ends with)"))
    }
}

/// Builds an And/Or from terms, flattening nested ones of the same operator.
fn flatten(terms: Vec<Selector>, or: bool) -> Selector {
    let mut out = Vec::with_capacity(terms.len());
    for t in terms {
        match (t, or) {
            (Selector::Or(inner), true) | (Selector::And(inner), false) => out.extend(inner),
            (t, _) => out.push(t),
        }
    }
    if out.len() == 1 {
        if let Some(only) = out.pop() {
            return only;
        }
    }
    if or {
        Selector::Or(out)
    } else {
        Selector::And(out)
    }
}

impl Selector {
    /// Parses a selector. Empty (or all-whitespace) text is `all()`.
    pub fn parse(s: &str) -> Result<Selector, SelectorError> {
        let mut p = Parser { src: s, pos: 0 };
        p.skip_ws();
        if p.rest().is_empty() {
            return Ok(Selector::All);
        }
        let sel = p.or()?;
        p.skip_ws();
        if !p.rest().is_empty() {
            return Err(p.error("'&&', '||' or end of input"));
        }
        Ok(sel)
    }

    /// `a && b`, flattened.
    pub fn and(terms: Vec<Selector>) -> Selector {
        if terms.is_empty() {
            return Selector::All;
        }
        flatten(terms, false)
    }

    /// `a || b`, flattened. An empty list matches nothing (`!all()`).
    pub fn or(terms: Vec<Selector>) -> Selector {
        if terms.is_empty() {
            return Selector::Not(Box::new(Selector::All));
        }
        flatten(terms, true)
    }

    /// Whether a set of labels matches.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let get = |k: &String| labels.get(k);
        match self {
            Selector::All => true,
            Selector::Has(k) => labels.contains_key(k),
            Selector::Eq(k, v) => get(k) == Some(v),
            Selector::Ne(k, v) => get(k) != Some(v),
            Selector::In(k, set) => get(k).is_some_and(|v| set.contains(v)),
            Selector::NotIn(k, set) => !get(k).is_some_and(|v| set.contains(v)),
            Selector::Contains(k, s) => get(k).is_some_and(|v| v.contains(s.as_str())),
            Selector::StartsWith(k, s) => get(k).is_some_and(|v| v.starts_with(s.as_str())),
            Selector::EndsWith(k, s) => get(k).is_some_and(|v| v.ends_with(s.as_str())),
            Selector::Not(x) => !x.matches(labels),
            Selector::And(xs) => xs.iter().all(|x| x.matches(labels)),
            Selector::Or(xs) => xs.iter().any(|x| x.matches(labels)),
        }
    }

    /// True for `all()`.
    pub fn is_all(&self) -> bool {
        *self == Selector::All
    }
}

/// Writes a value in double quotes, or single quotes if it contains a double quote.
fn write_value(f: &mut fmt::Formatter<'_>, v: &str) -> fmt::Result {
    if v.contains('"') {
        write!(f, "'{v}'")
    } else {
        write!(f, "\"{v}\"")
    }
}

fn write_set(f: &mut fmt::Formatter<'_>, set: &BTreeSet<String>) -> fmt::Result {
    f.write_str("{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_value(f, v)?;
    }
    f.write_str("}")
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("all()"),
            Selector::Has(k) => write!(f, "has({k})"),
            Selector::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_value(f, v)
            }
            Selector::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_value(f, v)
            }
            Selector::In(k, set) => {
                write!(f, "{k} in ")?;
                write_set(f, set)
            }
            Selector::NotIn(k, set) => {
                write!(f, "{k} not in ")?;
                write_set(f, set)
            }
            Selector::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_value(f, v)
            }
            Selector::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_value(f, v)
            }
            Selector::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_value(f, v)
            }
            Selector::Not(x) => match **x {
                Selector::And(_) | Selector::Or(_) => write!(f, "!({x})"),
                _ => write!(f, "!{x}"),
            },
            Selector::And(xs) | Selector::Or(xs) => {
                let or = matches!(self, Selector::Or(_));
                if xs.is_empty() {
                    return f.write_str(if or { "!all()" } else { "all()" });
                }
                for (i, x) in xs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(if or { " || " } else { " && " })?;
                    }
                    match x {
                        Selector::Or(_) if !or => write!(f, "({x})")?,
                        _ => write!(f, "{x}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn p(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn parse_forms() {
        assert_eq!(p("all()"), Selector::All);
        assert_eq!(p(""), Selector::All);
        assert_eq!(p("  all( )  "), Selector::All);
        assert_eq!(p("has(rack)"), Selector::Has("rack".into()));
        assert_eq!(
            p("!has(rack)"),
            Selector::Not(Box::new(Selector::Has("rack".into())))
        );
        assert_eq!(p("rack == 'r1'"), Selector::Eq("rack".into(), "r1".into()));
        assert_eq!(p("rack==\"r1\""), Selector::Eq("rack".into(), "r1".into()));
        assert_eq!(p("rack != 'r1'"), Selector::Ne("rack".into(), "r1".into()));
        assert_eq!(
            p("kubernetes.io/hostname in {'a', \"b\"}"),
            Selector::In(
                "kubernetes.io/hostname".into(),
                ["a".to_string(), "b".to_string()].into()
            )
        );
        assert_eq!(
            p("x not in {}"),
            Selector::NotIn("x".into(), BTreeSet::new())
        );
        assert_eq!(
            p("a contains 'b'"),
            Selector::Contains("a".into(), "b".into())
        );
        assert_eq!(
            p("a starts with 'b'"),
            Selector::StartsWith("a".into(), "b".into())
        );
        assert_eq!(
            p("a ends with 'b'"),
            Selector::EndsWith("a".into(), "b".into())
        );
        // A label may be called "all", "has", "in", "not".
        assert_eq!(p("all == 'x'"), Selector::Eq("all".into(), "x".into()));
        assert_eq!(
            p("in in {'x'}"),
            Selector::In("in".into(), ["x".to_string()].into())
        );
        assert_eq!(p("index == 'x'"), Selector::Eq("index".into(), "x".into()));
    }

    #[test]
    fn precedence_and_flattening() {
        let s = p("a == 'x' || b == 'y' && has(c)");
        assert_eq!(
            s,
            Selector::Or(vec![
                Selector::Eq("a".into(), "x".into()),
                Selector::And(vec![
                    Selector::Eq("b".into(), "y".into()),
                    Selector::Has("c".into())
                ]),
            ])
        );
        assert_eq!(
            p("has(a) && (has(b) && has(c))"),
            p("has(a) && has(b) && has(c)")
        );
        assert_eq!(
            p("(has(a) || has(b)) && has(c)").to_string(),
            "(has(a) || has(b)) && has(c)"
        );
        assert_eq!(p("!(has(a) && has(b))").to_string(), "!(has(a) && has(b))");
        assert_eq!(p("!!has(a)").to_string(), "!!has(a)");
        assert_eq!(p("((has(a)))"), Selector::Has("a".into()));
    }

    #[test]
    fn display_canonical() {
        assert_eq!(
            p("rack=='r1'&&!has( x )").to_string(),
            "rack == \"r1\" && !has(x)"
        );
        assert_eq!(p("a in {'b','a','b'}").to_string(), "a in {\"a\", \"b\"}");
        assert_eq!(p("a == 'say \"hi\"'").to_string(), "a == 'say \"hi\"'");
    }

    #[test]
    fn matching() {
        let l = labels(&[("rack", "r1"), ("zone", "eu-west-1a")]);
        assert!(p("all()").matches(&l));
        assert!(p("has(rack)").matches(&l));
        assert!(!p("!has(rack)").matches(&l));
        assert!(p("rack == 'r1'").matches(&l));
        assert!(!p("rack == 'r2'").matches(&l));
        assert!(p("rack != 'r2'").matches(&l));
        assert!(p("missing != 'r2'").matches(&l));
        assert!(!p("missing == ''").matches(&l));
        assert!(p("rack in {'r1', 'r2'}").matches(&l));
        assert!(!p("missing in {'r1'}").matches(&l));
        assert!(p("missing not in {'r1'}").matches(&l));
        assert!(!p("rack not in {'r1'}").matches(&l));
        assert!(
            p("zone starts with 'eu-' && zone ends with '1a' && zone contains 'west'").matches(&l)
        );
        assert!(p("has(nope) || rack == 'r1'").matches(&l));
        assert!(!p("has(nope) || rack == 'r2'").matches(&l));
        assert!(!p("!(has(rack) && has(zone))").matches(&l));
    }

    #[test]
    fn errors() {
        let e = Selector::parse("rack == ").unwrap_err();
        assert_eq!(e.position, 8);
        assert_eq!(e.expected, "a quoted value");
        assert_eq!(e.found, "end of input");
        assert_eq!(
            e.to_string(),
            "invalid selector \"rack == \": expected a quoted value at position 8, found end of input"
        );
        let e = Selector::parse("rack = 'x'").unwrap_err();
        assert_eq!((e.position, e.found.as_str()), (5, "\"=\""));
        let e = Selector::parse("has(a) has(b)").unwrap_err();
        assert_eq!(e.expected, "'&&', '||' or end of input");
        assert_eq!(e.position, 7);
        let e = Selector::parse("(has(a)").unwrap_err();
        assert_eq!(e.expected, "')'");
        let e = Selector::parse("a == 'x").unwrap_err();
        assert!(e.expected.contains("closed by '"), "{e}");
        let e = Selector::parse("a in {'x' 'y'}").unwrap_err();
        assert_eq!(e.expected, "',' or '}'");
        let e = Selector::parse("a not {'x'}").unwrap_err();
        assert_eq!(e.expected, "'in' after 'not'");
        let e = Selector::parse("&& has(a)").unwrap_err();
        assert_eq!((e.position, e.found.as_str()), (0, "\"&&\""));
        let e = Selector::parse("has()").unwrap_err();
        assert_eq!(e.expected, "a label key");
        assert!(Selector::parse("a == 'x' ||").is_err());
        assert!(Selector::parse("é == 'x'").is_err());
    }

    fn arb_key() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_./-]{0,8}"
    }

    fn arb_value() -> impl Strategy<Value = String> {
        prop_oneof!["[a-zA-Z0-9 _.:/-]{0,8}", "[a-z\"]{0,5}", "[a-z']{0,5}",]
    }

    fn arb_leaf() -> impl Strategy<Value = Selector> {
        prop_oneof![
            Just(Selector::All),
            arb_key().prop_map(Selector::Has),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Eq(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Ne(k, v)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, s)| Selector::In(k, s)),
            (arb_key(), prop::collection::btree_set(arb_value(), 0..4))
                .prop_map(|(k, s)| Selector::NotIn(k, s)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::Contains(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::StartsWith(k, v)),
            (arb_key(), arb_value()).prop_map(|(k, v)| Selector::EndsWith(k, v)),
        ]
    }

    fn arb_selector() -> impl Strategy<Value = Selector> {
        arb_leaf().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|x| Selector::Not(Box::new(x))),
                prop::collection::vec(inner.clone(), 2..4).prop_map(Selector::and),
                prop::collection::vec(inner, 2..4).prop_map(Selector::or),
            ]
        })
    }

    fn arb_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
        prop::collection::btree_map(arb_key(), arb_value(), 0..6)
    }

    proptest! {
        #[test]
        fn display_parses_back(s in arb_selector()) {
            let text = s.to_string();
            let back = Selector::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &s, "text: {}", text);
            prop_assert_eq!(back.to_string(), text);
        }

        #[test]
        fn matching_survives_round_trip(s in arb_selector(), l in arb_labels()) {
            let back = Selector::parse(&s.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back.matches(&l), s.matches(&l));
        }

        #[test]
        fn parse_never_panics(text in "[ -~]{0,40}") {
            if let Err(e) = Selector::parse(&text) {
                prop_assert!(e.position <= text.chars().count());
            }
        }
    }
}
