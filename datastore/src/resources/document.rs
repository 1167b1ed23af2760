//! Parsing `calyx apply -f` input: one or more YAML (or JSON) documents, each a resource or a
//! list of resources, every one decoded strictly and validated.

use std::fmt;

use serde::de::DeserializeOwned;

use super::{
    BGPConfiguration, BGPFilter, BGPPeer, FelixConfiguration, IPPool, IPReservation, Kind, Node,
    Resource, ValidationError,
};

/// Why a document was rejected by [`parse_documents`].
///
/// Display: `document 2 (IPPool "pool-a"): spec.blockSize: 33 is out of range 20-32 for an IPv4
/// pool`; for a list, `document 1 item 3 (Node "n1"): ...`; for a syntax error, `document 2:
/// invalid YAML: mapping values are not allowed in this context at line 7 column 9`. Line numbers
/// count from the start of the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentError {
    /// 1-based index of the document among the non-empty documents of the input.
    pub document: usize,
    /// 1-based index within the `items` of a list document.
    pub item: Option<u32>,
    /// The document's `kind`, when it could be read.
    pub kind: Option<String>,
    /// The document's `metadata.name`, when it could be read.
    pub name: Option<String>,
    /// The 1-based line where the document starts.
    pub start_line: u32,
    /// The 1-based line of the error, when known (syntax and decoding errors).
    pub line: Option<u32>,
    /// What is wrong.
    pub problem: DocumentProblem,
}

/// The problem part of a [`DocumentError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentProblem {
    /// Not well-formed YAML/JSON. The message includes the line and column.
    Syntax(String),
    /// Well-formed but not a valid resource: unknown kind or field, missing field, wrong type or
    /// unparsable value. The message names the field path and, when known, the line.
    Decode(String),
    /// Decoded, but failed validation.
    Invalid(Box<ValidationError>),
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => write!(f, " ({k} {n:?})")?,
            (Some(k), None) => write!(f, " ({k})")?,
            _ => {}
        }
        match &self.problem {
            DocumentProblem::Syntax(m) => write!(f, ": invalid YAML: {m}"),
            DocumentProblem::Decode(m) => write!(f, ": {m}"),
            DocumentProblem::Invalid(e) => write!(f, ": {}", e.detail()),
        }
    }
}

/// One document of the input: where it starts and its text, padded with blank lines so that
/// parser line numbers are those of the whole input.
struct Chunk {
    start_line: usize,
    text: String,
}

/// Splits a YAML stream at `---` / `...` marker lines. Content after `--- ` on the same line
/// stays in the document (the marker is blanked so columns are unchanged).
fn split_documents(text: &str) -> Vec<Chunk> {
    let is_marker = |line: &str, m: &str| {
        line.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let mut chunks = Vec::new();
    let mut cur: Option<Chunk> = None;
    let new_chunk = |start_line: usize| Chunk {
        start_line,
        text: "\n".repeat(start_line),
    };
    for (i, line) in text.split('\n').enumerate() {
        if is_marker(line, "---") || is_marker(line, "...") {
            if let Some(c) = cur.take() {
                chunks.push(c);
            }
            let mut c = new_chunk(i);
            if is_marker(line, "---") {
                c.text.push_str("   ");
                c.text.push_str(&line[3..]);
                c.text.push('\n');
            } else {
                c.text.push('\n');
            }
            cur = Some(c);
        } else {
            let c = cur.get_or_insert_with(|| new_chunk(i));
            // `%YAML` / `%TAG` directives: a `%` cannot start content at column 0.
            if !line.starts_with('%') {
                c.text.push_str(line);
            }
            c.text.push('\n');
        }
    }
    chunks.extend(cur);
    chunks
}

/// The documents of a stream for the policy parser: `(first line, text padded to keep line
/// numbers, number of lines)`.
pub(crate) fn split_for_policy(text: &str) -> Vec<(usize, String, usize)> {
    split_documents(text)
        .into_iter()
        .map(|c| {
            let n = c.text.matches('\n').count().saturating_sub(c.start_line);
            (c.start_line, c.text, n)
        })
        .collect()
}

/// Where the YAML error message ends its own location, strip it (used when the text was
/// re-generated and its line numbers mean nothing to the user).
fn yaml_message_without_location(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    if let Some(loc) = e.location() {
        let suffix = format!(" at line {} column {}", loc.line(), loc.column());
        if let Some(stripped) = s.strip_suffix(&suffix) {
            return stripped.to_string();
        }
    }
    s
}

/// Saturating conversion for line and item numbers.
fn n32(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// What is known about the document being processed, for error reports.
struct Ctx {
    document: usize,
    item: Option<u32>,
    kind: Option<String>,
    name: Option<String>,
    start_line: u32,
}

impl Ctx {
    fn err(&self, line: Option<usize>, problem: DocumentProblem) -> DocumentError {
        DocumentError {
            document: self.document,
            item: self.item,
            kind: self.kind.clone(),
            name: self.name.clone(),
            start_line: self.start_line,
            line: line.map(n32),
            problem,
        }
    }

    fn decode(&self, msg: impl Into<String>) -> DocumentError {
        self.err(None, DocumentProblem::Decode(msg.into()))
    }
}

/// Parses every resource in `text`: YAML documents separated by `---` (or JSON objects), each a
/// resource or a list (`kind: List`, `kind: IPPoolList`, ... with `items:`). Empty documents are
/// skipped. Every resource is decoded strictly (a field that is not in Calico 3.31's API for its
/// kind is an error, with its line when known; every field that is, is kept) and validated on its
/// own; the first problem is returned. Overlaps between pools are not checked here: use
/// [`check_pool_overlaps`](super::check_pool_overlaps) with the existing pools.
pub fn parse_documents(text: &str) -> Result<Vec<Resource>, DocumentError> {
    let mut out = Vec::new();
    let mut document = 0;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for chunk in split_documents(text) {
        let start_line = n32(chunk.start_line + 1);
        let yaml: Result<serde_yaml_ng::Value, _> = serde_yaml_ng::from_str(&chunk.text);
        match yaml {
            Ok(serde_yaml_ng::Value::Null) => continue,
            Ok(value) => {
                document += 1;
                let ctx = Ctx {
                    document,
                    item: None,
                    kind: None,
                    name: None,
                    start_line,
                };
                let value = serde_json::to_value(&value)
                    .map_err(|e| ctx.decode(format!("unsupported YAML content: {e}")))?;
                process_value(ctx, value, Some(&chunk.text), &mut out)?;
            }
            Err(yaml_err) => {
                // JSON that YAML rejects (tabs, several objects in one document).
                let trimmed = chunk.text.trim_start();
                if trimmed.starts_with('{') || trimmed.starts_with('[') {
                    let mut values = Vec::new();
                    let stream = serde_json::Deserializer::from_str(&chunk.text)
                        .into_iter::<serde_json::Value>();
                    for v in stream {
                        match v {
                            Ok(v) => values.push(v),
                            Err(e) => {
                                return Err(DocumentError {
                                    document: document + values.len() + 1,
                                    item: None,
                                    kind: None,
                                    name: None,
                                    start_line,
                                    line: Some(n32(e.line())),
                                    problem: DocumentProblem::Syntax(format!("(as JSON) {e}")),
                                });
                            }
                        }
                    }
                    for v in values {
                        document += 1;
                        let ctx = Ctx {
                            document,
                            item: None,
                            kind: None,
                            name: None,
                            start_line,
                        };
                        process_value(ctx, v, None, &mut out)?;
                    }
                    continue;
                }
                return Err(DocumentError {
                    document: document + 1,
                    item: None,
                    kind: None,
                    name: None,
                    start_line,
                    line: yaml_err.location().map(|l| n32(l.line())),
                    problem: DocumentProblem::Syntax(yaml_err.to_string()),
                });
            }
        }
    }
    Ok(out)
}

/// Handles one document's value: a resource, a list of resources, or a top-level array.
/// `source` is the document's (padded) YAML text, used to decode with field paths and lines.
fn process_value(
    mut ctx: Ctx,
    value: serde_json::Value,
    source: Option<&str>,
    out: &mut Vec<Resource>,
) -> Result<(), DocumentError> {
    if let serde_json::Value::Array(items) = value {
        return process_items(&ctx, items, None, out);
    }
    let serde_json::Value::Object(map) = &value else {
        return Err(
            ctx.decode("expected a resource (a mapping with apiVersion, kind, metadata, spec)")
        );
    };
    let kind_str = match map.get("kind") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => return Err(ctx.decode(format!("kind: expected a string, found {other}"))),
        None => return Err(ctx.decode("missing field `kind`")),
    };
    ctx.kind = Some(kind_str.clone());
    ctx.name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string);

    let list_kind = if kind_str == "List" {
        Some(None)
    } else {
        Kind::from_list_kind(&kind_str).map(Some)
    };
    if let Some(item_kind) = list_kind {
        let items = match map.get("items") {
            Some(serde_json::Value::Array(items)) => items.clone(),
            Some(serde_json::Value::Null) | None => Vec::new(),
            Some(_) => return Err(ctx.decode("items: expected a list")),
        };
        if let Some(extra) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
        {
            return Err(ctx.decode(format!(
                "unknown field `{extra}`, expected one of `apiVersion`, `kind`, `metadata`, `items`"
            )));
        }
        ctx.name = None;
        return process_items(&ctx, items, item_kind, out);
    }

    let kind = Kind::from_kind_field(&kind_str).ok_or_else(|| {
        let hint = Kind::parse(&kind_str)
            .map(|k| format!(" (did you mean {k}?)"))
            .unwrap_or_else(|_| {
                " (expected IPPool, BGPPeer, BGPConfiguration, Node, FelixConfiguration, IPReservation, BGPFilter, or a List \
                 of them)"
                    .into()
            });
        ctx.decode(format!("kind: unknown kind {kind_str:?}{hint}"))
    })?;
    check_fields(&ctx, kind, &value, source)?;
    let resource = match source {
        Some(text) => decode_yaml(&ctx, kind, text)?,
        None => decode_value(&ctx, kind, value)?,
    };
    validate_into(&ctx, resource, out)
}

fn process_items(
    ctx: &Ctx,
    items: Vec<serde_json::Value>,
    item_kind: Option<Kind>,
    out: &mut Vec<Resource>,
) -> Result<(), DocumentError> {
    for (i, mut item) in items.into_iter().enumerate() {
        let mut ictx = Ctx {
            document: ctx.document,
            item: Some(n32(i + 1)),
            kind: None,
            name: None,
            start_line: ctx.start_line,
        };
        // Items of a typed list may leave out their kind and apiVersion.
        if let (Some(k), serde_json::Value::Object(m)) = (item_kind, &mut item) {
            m.entry("kind").or_insert_with(|| k.as_str().into());
            m.entry("apiVersion")
                .or_insert_with(|| super::API_VERSION.into());
        }
        let kind_str = item
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        ictx.kind = kind_str.clone();
        ictx.name = item
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        let Some(kind_str) = kind_str else {
            return Err(ictx.decode("missing field `kind`"));
        };
        let kind = Kind::from_kind_field(&kind_str)
            .ok_or_else(|| ictx.decode(format!("kind: unknown kind {kind_str:?}")))?;
        if let Some(k) = item_kind {
            if k != kind {
                return Err(ictx.decode(format!("kind: {kind} in a {k}List")));
            }
        }
        check_fields(&ictx, kind, &item, None)?;
        let resource = decode_value(&ictx, kind, item)?;
        validate_into(&ictx, resource, out)?;
    }
    Ok(())
}

/// Refuses a field that is not in Calico's API (a typo), with the line where it is when the
/// document's text is known and the field's name occurs on one line only.
fn check_fields(
    ctx: &Ctx,
    kind: Kind,
    value: &serde_json::Value,
    source: Option<&str>,
) -> Result<(), DocumentError> {
    let Err(message) = super::schema::check_fields(kind, value, false) else {
        return Ok(());
    };
    let position = source.and_then(|text| {
        let field = message.split('`').nth(1)?;
        field_position(text, field)
    });
    Err(match position {
        Some((line, column)) => ctx.err(
            Some(line),
            DocumentProblem::Decode(format!("{message} at line {line} column {column}")),
        ),
        None => ctx.decode(message),
    })
}

/// The 1-based line and column of `field:` in YAML `text` (block or flow style, quoted or
/// not), when exactly one line holds it.
fn field_position(text: &str, field: &str) -> Option<(usize, usize)> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let hit = [
            format!("{field}:"),
            format!("\"{field}\":"),
            format!("'{field}':"),
        ]
        .iter()
        .filter_map(|pat| {
            line.match_indices(pat.as_str()).find_map(|(at, _)| {
                // The name must start a key: after indentation, `- `, `{`, `,` or a space.
                let before = line[..at].trim_end();
                (before.is_empty()
                    || before.ends_with(['-', '{', ','])
                    || line[..at].ends_with(' '))
                .then_some(at)
            })
        })
        .min();
        if let Some(at) = hit {
            if found.is_some() {
                return None;
            }
            found = Some((i + 1, at + 1));
        }
    }
    found
}

fn validate_into(
    ctx: &Ctx,
    resource: Resource,
    out: &mut Vec<Resource>,
) -> Result<(), DocumentError> {
    if let Err(e) = resource.validate() {
        return Err(ctx.err(None, DocumentProblem::Invalid(Box::new(e))));
    }
    out.push(resource);
    Ok(())
}

/// Decodes from the document's own text, so errors carry the field path and the line.
fn decode_yaml(ctx: &Ctx, kind: Kind, text: &str) -> Result<Resource, DocumentError> {
    fn de<T: DeserializeOwned>(ctx: &Ctx, text: &str) -> Result<T, DocumentError> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            ctx.err(
                e.location().map(|l| l.line()),
                DocumentProblem::Decode(e.to_string()),
            )
        })
    }
    Ok(match kind {
        Kind::IPPool => Resource::IPPool(de::<IPPool>(ctx, text)?),
        Kind::BGPPeer => Resource::BGPPeer(de::<BGPPeer>(ctx, text)?),
        Kind::BGPConfiguration => Resource::BGPConfiguration(de::<BGPConfiguration>(ctx, text)?),
        Kind::Node => Resource::Node(de::<Node>(ctx, text)?),
        Kind::FelixConfiguration => {
            Resource::FelixConfiguration(de::<FelixConfiguration>(ctx, text)?)
        }
        Kind::IPReservation => Resource::IPReservation(de::<IPReservation>(ctx, text)?),
        Kind::BGPFilter => Resource::BGPFilter(de::<BGPFilter>(ctx, text)?),
    })
}

/// Decodes a value with no source text (list items, JSON). It goes through YAML text so that
/// errors still name the field path; the line numbers of that text are dropped.
fn decode_value(
    ctx: &Ctx,
    kind: Kind,
    value: serde_json::Value,
) -> Result<Resource, DocumentError> {
    decode_value_with_path(kind, &value).map_err(|m| ctx.decode(m))
}

/// Decodes a JSON value as a resource of `kind`; the error message names the field path
/// (`spec.cidr: invalid CIDR ...`) but no line.
pub(crate) fn decode_value_with_path(
    kind: Kind,
    value: &serde_json::Value,
) -> Result<Resource, String> {
    if let Some(found) = value.get("kind").and_then(serde_json::Value::as_str) {
        if found != kind.as_str() {
            return Err(format!(
                "kind: expected {:?}, found {found:?}",
                kind.as_str()
            ));
        }
    }
    let text =
        serde_yaml_ng::to_string(value).map_err(|e| format!("cannot re-encode document: {e}"))?;
    fn de<T: DeserializeOwned>(text: &str) -> Result<T, String> {
        serde_yaml_ng::from_str(text).map_err(|e| yaml_message_without_location(&e))
    }
    Ok(match kind {
        Kind::IPPool => Resource::IPPool(de::<IPPool>(&text)?),
        Kind::BGPPeer => Resource::BGPPeer(de::<BGPPeer>(&text)?),
        Kind::BGPConfiguration => Resource::BGPConfiguration(de::<BGPConfiguration>(&text)?),
        Kind::Node => Resource::Node(de::<Node>(&text)?),
        Kind::FelixConfiguration => Resource::FelixConfiguration(de::<FelixConfiguration>(&text)?),
        Kind::IPReservation => Resource::IPReservation(de::<IPReservation>(&text)?),
        Kind::BGPFilter => Resource::BGPFilter(de::<BGPFilter>(&text)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL_A: &str = "apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: pool-a
spec:
  cidr: 10.0.0.0/16
";

    #[test]
    fn multi_document() {
        let text = format!(
            "# leading comment\n---\n{POOL_A}---\n# only a comment\n---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {{name: n1}}\n...\n"
        );
        let rs = parse_documents(&text).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].kind(), Kind::IPPool);
        assert_eq!(rs[1].name(), "n1");
        assert!(parse_documents("").unwrap().is_empty());
        assert!(parse_documents("---\n---\n# nothing\n").unwrap().is_empty());
        assert_eq!(
            parse_documents(&format!("%YAML 1.2\n---\n{POOL_A}"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn validation_error_format() {
        let text = format!(
            "{POOL_A}---\n{}",
            POOL_A.replace("16\n", "16\n  blockSize: 33\n")
        );
        let e = parse_documents(&text).unwrap_err();
        assert_eq!(
            e.to_string(),
            "document 2 (IPPool \"pool-a\"): spec.blockSize: 33 is out of range 20-32 for an IPv4 pool"
        );
        assert_eq!(e.start_line, 7);
    }

    #[test]
    fn syntax_error_has_document_and_absolute_line() {
        let text = format!(
            "{POOL_A}---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: [x\n"
        );
        let e = parse_documents(&text).unwrap_err();
        assert_eq!(e.document, 2);
        assert!(matches!(e.problem, DocumentProblem::Syntax(_)));
        let s = e.to_string();
        assert!(s.starts_with("document 2: invalid YAML: "), "{s}");
        assert!(e.line.unwrap() >= 10, "{s}");
        let e = parse_documents("a: b: c\n").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn decode_errors_name_field_and_line() {
        let text = format!(
            "{POOL_A}---\n{}",
            POOL_A.replace("16\n", "16\n  natoutgoing: true\n")
        );
        let e = parse_documents(&text).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("document 2 (IPPool \"pool-a\"): spec: unknown field `natoutgoing`"),
            "{s}"
        );
        assert!(s.contains("line 14"), "{s}");
        assert_eq!(e.line, Some(14));
        let e = parse_documents(&POOL_A.replace("IPPool", "ippool")).unwrap_err();
        assert!(e.to_string().contains("did you mean IPPool?"), "{e}");
        let e = parse_documents("kind: HostEndpoint\nmetadata: {name: x}\n").unwrap_err();
        assert!(
            e.to_string().contains("unknown kind \"HostEndpoint\""),
            "{e}"
        );
        let e = parse_documents("metadata: {name: x}\n").unwrap_err();
        assert!(e.to_string().contains("missing field `kind`"), "{e}");
        let e =
            parse_documents(&POOL_A.replace("cidr: 10.0.0.0/16", "cidr: 10.0.0.0/40")).unwrap_err();
        assert!(
            e.to_string()
                .contains("spec.cidr: invalid CIDR \"10.0.0.0/40\""),
            "{e}"
        );
    }

    #[test]
    fn field_positions() {
        let text =
            "kind: IPPool\nmetadata: {name: p}\nspec: {cidr: 10.0.0.0/16, natoutgoing: true}\n";
        assert_eq!(field_position(text, "natoutgoing"), Some((3, 27)));
        assert_eq!(field_position("a:\n  - \"x\": 1\n", "x"), Some((2, 5)));
        // On two lines: no guess.
        assert_eq!(field_position("x: 1\ny:\n  x: 2\n", "x"), None);
        // Part of another name is not the field.
        assert_eq!(field_position("spec:\n  fooname: 1\n", "name"), None);
        let e = parse_documents(text).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().ends_with("at line 3 column 27"), "{e}");
    }

    #[test]
    fn lists() {
        let text = "apiVersion: projectcalico.org/v3
kind: IPPoolList
metadata: {resourceVersion: '12'}
items:
- metadata: {name: a}
  spec: {cidr: 10.0.0.0/16}
- apiVersion: projectcalico.org/v3
  kind: IPPool
  metadata: {name: b}
  spec: {cidr: 10.1.0.0/16}
";
        let rs = parse_documents(text).unwrap();
        assert_eq!(
            rs.iter().map(Resource::name).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let e = parse_documents(&text.replace("10.1.0.0/16", "10.1.0.0/16, vxlanmode: Always"))
            .unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("document 1 item 2 (IPPool \"b\"): spec: unknown field `vxlanmode`"),
            "{s}"
        );
        assert!(!s.contains("line"), "{s}");
        let text = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: projectcalico.org/v3, kind: Node, metadata: {name: n1}}\n- {apiVersion: projectcalico.org/v3, kind: BGPPeer, metadata: {name: p}, spec: {peerSelector: has(rr)}}\n";
        let rs = parse_documents(text).unwrap();
        assert_eq!(rs.len(), 2);
        let e = parse_documents(&text.replace("has(rr)", "has(")).unwrap_err();
        assert!(e.to_string().starts_with("document 1 item 2 (BGPPeer \"p\"): spec.peerSelector: \"has(\" is not a valid selector"), "{e}");
        let e = parse_documents("kind: NodeList\nitems:\n- kind: IPPool\n  metadata: {name: x}\n")
            .unwrap_err();
        assert!(e.to_string().contains("IPPool in a NodeList"), "{e}");
    }

    #[test]
    fn json_input() {
        let one = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"a"},"spec":{"cidr":"10.0.0.0/16"}}"#;
        assert_eq!(parse_documents(one).unwrap().len(), 1);
        let two = format!(
            "{one}\n{}",
            one.replace("\"a\"", "\"b\"").replace("10.0", "10.1")
        );
        assert_eq!(parse_documents(&two).unwrap().len(), 2);
        let tabs = "{\n\t\"apiVersion\": \"projectcalico.org/v3\",\n\t\"kind\": \"Node\",\n\t\"metadata\": {\"name\": \"n\"}\n}";
        assert_eq!(parse_documents(tabs).unwrap().len(), 1);
        let e = parse_documents(&one.replace("cidr", "cdr")).unwrap_err();
        assert!(e.to_string().contains("unknown field `cdr`"), "{e}");
        let arr = format!("[{one}]");
        assert_eq!(parse_documents(&arr).unwrap().len(), 1);
        let e = parse_documents("{\"kind\": \"IPPool\",,}").unwrap_err();
        assert!(matches!(e.problem, DocumentProblem::Syntax(_)), "{e}");
    }

    #[test]
    fn marker_with_content_and_crlf() {
        let text = "--- {apiVersion: projectcalico.org/v3, kind: Node, metadata: {name: a}}\r\n--- {apiVersion: projectcalico.org/v3, kind: Node, metadata: {name: b}}\r\n";
        let rs = parse_documents(text).unwrap();
        assert_eq!(rs.len(), 2);
        let crlf = POOL_A.replace('\n', "\r\n");
        assert_eq!(parse_documents(&crlf).unwrap().len(), 1);
    }
}
