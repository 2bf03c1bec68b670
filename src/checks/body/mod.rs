//! SPEC §3 step 9: the request body of a route with `validate`. Content type → 415; size →
//! 413 as soon as the limit is crossed; JSON that is not UTF-8, malformed, nested deeper than
//! `max_json_depth` or with duplicate keys → 400; a JSON Schema violation → 422 listing the
//! failing instance paths (JSON pointers) and keywords, at most 10. A route with threat
//! protection has its body read whole here too, for step 10's rules (the built-in rules: only
//! the body types they parse).

mod read;

pub use read::has_body;

use super::limits;
use crate::problem::{ProblemError, Refusal};
use crate::waf::json;
use bytes::Bytes;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use pingora_proxy::Session;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Schema violations listed in one 422 at most.
pub const MAX_REPORTED_VIOLATIONS: usize = 10;

/// The compiled `validate` table of a route.
#[derive(Clone)]
pub struct BodyRules {
    /// Lower-case media types without parameters, e.g. `application/json`.
    pub content_types: Vec<String>,
    pub schema: Option<Arc<jsonschema::Validator>>,
    pub max_json_depth: usize,
}

impl fmt::Debug for BodyRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyRules")
            .field("content_types", &self.content_types)
            .field("schema", &self.schema.is_some())
            .field("max_json_depth", &self.max_json_depth)
            .finish()
    }
}

/// What step 9 does on a route: its body limit, its `validate` table, and whether step 10's
/// rules need the body read whole.
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    /// The route's `max_body_bytes`.
    pub max_bytes: u64,
    pub validate: Option<BodyRules>,
    /// `Some` when step 10's rules inspect this route's bodies.
    pub inspected: Option<Inspected>,
}

/// The body step 10's rules inspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    /// With `waf.body_over_limit = "refuse"`, the most the rules see (`waf.max_body_bytes`):
    /// a larger body is refused with 413 as soon as it crosses this. `None`: the rules see a
    /// prefix of a larger body.
    pub refuse_above: Option<u64>,
    /// Only bodies the rule engine can parse (JSON, XML, forms, multipart, or no
    /// `Content-Type`) are read; others stream unread (the built-in rules).
    pub parsed_only: bool,
}

impl BodyPolicy {
    /// The route limit alone: bodies stream to the upstream, held to `max_bytes`.
    pub fn streamed(max_bytes: u64) -> Self {
        BodyPolicy {
            max_bytes,
            validate: None,
            inspected: None,
        }
    }
}

/// A body read and validated in step 9, kept for step 10 and then handed back for forwarding.
pub struct ValidatedBody {
    pub bytes: Bytes,
    /// A JSON body's members as step 10's rules see them (`waf::json`), written by the parse
    /// that validated it, on a route whose rules inspect bodies.
    pub members: Option<json::Members>,
}

/// Step 9. The body of a route with `validate` or with threat protection is read up to the
/// route's limit before any upstream is chosen, checked, then handed back to Pingora to be forwarded
/// byte for byte; other bodies stream, held to the limit as they pass.
pub async fn check(
    session: &mut Session,
    policy: &BodyPolicy,
    read_timeout: Duration,
) -> Result<Option<ValidatedBody>, Refusal> {
    // A body that stalls is given up after `body_read_timeout`, streamed or read here
    // (Pingora's own wait for each read is 60 s).
    session
        .as_downstream_mut()
        .set_read_timeout(Some(read_timeout));
    if (policy.validate.is_none() && policy.inspected.is_none()) || !has_body(session.req_header())
    {
        return Ok(None);
    }
    let content_type = session
        .req_header()
        .headers
        .get("content-type")
        .map(|v| v.as_bytes());
    let unread_type =
        content_type.is_some() && crate::waf::eval::body_processor(content_type).is_none();
    if policy.validate.is_none() && policy.inspected.is_some_and(|i| i.parsed_only) && unread_type {
        return Ok(None);
    }
    let media = match &policy.validate {
        Some(rules) => Some(check_content_type(rules, content_type)?),
        None => None,
    };
    // Past what the rules inspect, `refuse` stops reading at once.
    let rules_limit = policy.inspected.and_then(|i| i.refuse_above);
    let bytes = match rules_limit {
        Some(limit) if limit < policy.max_bytes => {
            read::whole(session, limit, read_timeout, || over_rules_limit(limit)).await?
        }
        _ => {
            let max = policy.max_bytes;
            read::whole(session, max, read_timeout, || limits::body_too_large(max)).await?
        }
    };
    // Step 10's rules read the members of a JSON body from this parse; the parsed value
    // itself is needed only by the schema, and is let go here.
    let members = match (&policy.validate, media) {
        (Some(rules), Some(media)) if is_json(&media) => {
            let mut members = policy
                .inspected
                .map(|_| json::Members::for_body(bytes.len()));
            check_json_into(rules, &bytes, members.as_mut())?;
            members
        }
        _ => None,
    };
    Ok(Some(ValidatedBody { bytes, members }))
}

/// A body larger than the `[waf]` rules may see, with `body_over_limit = "refuse"`.
fn over_rules_limit(limit: u64) -> Refusal {
    Refusal::invalid(
        413,
        "body_too_large",
        format!("threat protection inspects request bodies of at most {limit} bytes"),
    )
}

/// The media type of a `Content-Type` value: parameters removed, lower case.
pub fn media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

pub fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Check the `Content-Type` against the route's allow-list; returns the media type.
pub fn check_content_type(rules: &BodyRules, header: Option<&[u8]>) -> Result<String, Refusal> {
    let unsupported = || {
        Refusal::invalid(
            415,
            "unsupported_media_type",
            "this content type is not accepted here",
        )
        .with_header("Accept-Post", rules.content_types.join(", "))
    };
    let Some(raw) = header else {
        return Err(unsupported());
    };
    let text = std::str::from_utf8(raw).map_err(|_| unsupported())?;
    let media = media_type(text);
    if !rules.content_types.is_empty() && !rules.content_types.contains(&media) {
        return Err(unsupported());
    }
    // A JSON body must be UTF-8 (RFC 8259); any other charset parameter is refused.
    if is_json(&media) {
        for param in text.split(';').skip(1) {
            if let Some((name, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"');
                if name.trim().eq_ignore_ascii_case("charset")
                    && !value.eq_ignore_ascii_case("utf-8")
                {
                    return Err(unsupported());
                }
            }
        }
    }
    Ok(media)
}

/// Whether JSON text nests deeper than `max`, found by counting brackets outside strings: no
/// recursion, so no input can exhaust the stack. Runs before the parser sees the text.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => {
                // To the quote that ends the string, past escaped characters, in long strides.
                loop {
                    let Some(rest) = bytes.get(i..) else {
                        return false;
                    };
                    match memchr::memchr2(b'"', b'\\', rest) {
                        // An unterminated string: nothing after it counts.
                        None => return false,
                        Some(k) if rest[k] == b'\\' => i += k + 2,
                        Some(k) => {
                            i += k + 1;
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A JSON value that refuses objects with a repeated key: two parsers that disagree about
/// which duplicate wins are a classic way past a validating gateway. With `members`, each
/// scalar is also written as step 10's rules see it (`waf::json`), so that they need not
/// parse the body again.
struct Strict<'a> {
    members: Option<(&'a mut json::Path, &'a mut json::Members)>,
}

impl Strict<'_> {
    /// The same, for a member or an element.
    fn inner(&mut self) -> Strict<'_> {
        Strict {
            members: self.members.as_mut().map(|(p, m)| (&mut **p, &mut **m)),
        }
    }

    fn scalar(&mut self, write: impl FnOnce(&mut dyn json::Sink, &json::Path)) {
        if let Some((path, members)) = self.members.as_mut() {
            write(*members, path);
        }
    }

    /// Into a member or element of the path (no-op without members); the length to go back to.
    fn enter(&mut self, step: impl FnOnce(&mut json::Path) -> usize) -> Option<usize> {
        self.members.as_mut().map(|(path, _)| step(path))
    }

    fn back(&mut self, len: Option<usize>) {
        if let (Some((path, _)), Some(len)) = (self.members.as_mut(), len) {
            path.back(len);
        }
    }
}

impl<'de> de::DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(mut self, v: bool) -> Result<Value, E> {
        self.scalar(|sink, path| json::boolean(sink, path, v));
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(mut self, v: i64) -> Result<Value, E> {
        self.scalar(|sink, path| json::integer(sink, path, v));
        Ok(Value::from(v))
    }
    fn visit_u64<E>(mut self, v: u64) -> Result<Value, E> {
        self.scalar(|sink, path| json::integer(sink, path, v));
        Ok(Value::from(v))
    }
    fn visit_f64<E>(mut self, v: f64) -> Result<Value, E> {
        self.scalar(|sink, path| json::float(sink, path, v));
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(mut self, v: &str) -> Result<Value, E> {
        self.scalar(|sink, path| sink.scalar(path.as_str(), v.as_bytes()));
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(mut self, v: String) -> Result<Value, E> {
        self.scalar(|sink, path| sink.scalar(path.as_str(), v.as_bytes()));
        Ok(Value::String(v))
    }
    fn visit_unit<E>(mut self) -> Result<Value, E> {
        self.scalar(json::null);
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let len = self.enter(|path| path.index(out.len()));
            let next = seq.next_element_seed(self.inner())?;
            self.back(len);
            match next {
                Some(v) => out.push(v),
                None => return Ok(Value::Array(out)),
            }
        }
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let len = self.enter(|path| path.key(&key));
            let value = map.next_value_seed(self.inner())?;
            self.back(len);
            match out.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(_) => {
                    return Err(de::Error::custom("duplicate key"))
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// Validate a complete JSON body against the route's rules.
pub fn check_json(rules: &BodyRules, body: &[u8]) -> Result<Value, Refusal> {
    check_json_into(rules, body, None)
}

/// `check_json`, writing the body's members as step 10's rules see them into `members`.
pub fn check_json_into(
    rules: &BodyRules,
    body: &[u8],
    members: Option<&mut json::Members>,
) -> Result<Value, Refusal> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Err(Refusal::bad_request(
            "invalid_utf8",
            "the JSON body is not valid UTF-8",
        ));
    };
    if json_too_deep(body, rules.max_json_depth) {
        return Err(Refusal::bad_request(
            "json_too_deep",
            format!(
                "the JSON body nests deeper than {} levels",
                rules.max_json_depth
            ),
        ));
    }
    // From the text checked above: its strings are not checked for UTF-8 again.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Depth is bounded above, so serde_json's own recursion limit is not needed.
    let mut path = json::Path::default();
    let strict = Strict {
        members: members.map(|m| (&mut path, m)),
    };
    let parsed = de::DeserializeSeed::deserialize(strict, &mut deserializer).and_then(|v| {
        deserializer.end()?;
        Ok(v)
    });
    let value = match parsed {
        Ok(value) => value,
        Err(e) if e.to_string().starts_with("duplicate key") => {
            return Err(Refusal::bad_request(
                "json_duplicate_key",
                "the JSON body repeats a key in an object",
            ))
        }
        Err(_) => {
            return Err(Refusal::bad_request(
                "malformed_json",
                "the body is not valid JSON",
            ))
        }
    };
    // `is_valid` stops at the first failure and builds no error: the common case costs less.
    if let Some(schema) = rules.schema.as_ref().filter(|s| !s.is_valid(&value)) {
        let errors: Vec<ProblemError> = schema
            .iter_errors(&value)
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|e| schema_error(e.instance_path().to_string(), e.kind()))
            .collect();
        if !errors.is_empty() {
            let listed: Vec<String> = errors
                .iter()
                .map(|e| {
                    let at = e.pointer.trim_start_matches('#');
                    format!("{}: {}", if at.is_empty() { "/" } else { at }, e.keyword)
                })
                .collect();
            return Err(Refusal::invalid(
                422,
                "schema_violation",
                format!("the body does not match the schema: {}", listed.join("; ")),
            )
            .with_errors(errors));
        }
    }
    Ok(value)
}

/// Member names echoed in an error are cut to this many characters (they are the client's).
const MAX_NAME_CHARS: usize = 64;

/// One schema violation as a problem's `errors` entry: the location, the keyword and what the
/// rule asks, built from the rule alone. jsonschema's own message quotes the offending value,
/// which may be a secret or a script, so it is never used; only the names of unexpected
/// members (what the client must remove) come from the request.
fn schema_error(instance_path: String, kind: &ValidationErrorKind) -> ProblemError {
    use ValidationErrorKind as K;
    let names = |unexpected: &[String]| {
        let mut names: Vec<String> = unexpected
            .iter()
            .take(5)
            .map(|n| {
                let cut: String = n.chars().take(MAX_NAME_CHARS).collect();
                format!("\"{cut}\"")
            })
            .collect();
        if unexpected.len() > 5 {
            names.push(format!("and {} more", unexpected.len() - 5));
        }
        names.join(", ")
    };
    let detail = match kind {
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => {
            format!("members not allowed here: {}", names(unexpected))
        }
        K::Required { property } => match property.as_str() {
            Some(name) => format!("the member \"{name}\" is required"),
            None => "a required member is missing".into(),
        },
        K::Type { kind } => match kind {
            TypeKind::Single(t) => format!("must be of type {t}"),
            TypeKind::Multiple(set) => {
                let types: Vec<String> = set.iter().map(|t| t.to_string()).collect();
                format!("must be of type {}", types.join(" or "))
            }
        },
        K::Minimum { limit } => format!("must be at least {limit}"),
        K::Maximum { limit } => format!("must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("must be greater than {limit}"),
        K::ExclusiveMaximum { limit } => format!("must be less than {limit}"),
        K::MinLength { limit } => format!("must be at least {limit} characters long"),
        K::MaxLength { limit } => format!("must be at most {limit} characters long"),
        K::MinItems { limit } => format!("must have at least {limit} items"),
        K::MaxItems { limit } => format!("must have at most {limit} items"),
        K::MinProperties { limit } => format!("must have at least {limit} members"),
        K::MaxProperties { limit } => format!("must have at most {limit} members"),
        K::Format { format } => format!("must be a valid {format}"),
        K::Pattern { .. } => "must match the pattern the schema gives".into(),
        K::Enum { .. } => "must be one of the values the schema allows".into(),
        K::Constant { .. } => "must be the value the schema requires".into(),
        K::UniqueItems => "the items must all differ".into(),
        K::AdditionalItems { limit } => format!("must have at most {limit} items"),
        K::UnevaluatedItems { .. } => "has items the schema does not allow".into(),
        K::MultipleOf { .. } => "must be a multiple of the number the schema gives".into(),
        K::FalseSchema => "no value is allowed here".into(),
        other => format!("does not satisfy \"{}\"", other.keyword()),
    };
    ProblemError {
        pointer: format!("#{instance_path}"),
        keyword: kind.keyword().to_string(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(schema: Option<Value>) -> BodyRules {
        BodyRules {
            content_types: vec!["application/json".into()],
            schema: schema.map(|s| Arc::new(jsonschema::validator_for(&s).unwrap())),
            max_json_depth: 4,
        }
    }

    #[test]
    fn content_types() {
        let r = rules(None);
        assert!(check_content_type(&r, Some(b"application/json")).is_ok());
        assert!(check_content_type(&r, Some(b"Application/JSON; charset=utf-8")).is_ok());
        assert!(check_content_type(&r, Some(b"application/json; charset=\"UTF-8\"")).is_ok());
        assert_eq!(
            check_content_type(&r, Some(b"application/json; charset=latin1"))
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(
            check_content_type(&r, Some(b"text/plain"))
                .unwrap_err()
                .status,
            415
        );
        assert_eq!(check_content_type(&r, None).unwrap_err().status, 415);
        assert_eq!(
            check_content_type(&r, Some(b"\xff")).unwrap_err().status,
            415
        );
    }

    #[test]
    fn depth_without_recursion() {
        assert!(!json_too_deep(b"[[[[1]]]]", 4));
        assert!(json_too_deep(b"[[[[[1]]]]]", 4));
        assert!(!json_too_deep(br#"{"a":"[[[[[[[[["}"#, 4));
        assert!(!json_too_deep(br#"{"a":"\"[[[[[[[["}"#, 4));
        let deep = "[".repeat(100_000);
        assert!(json_too_deep(deep.as_bytes(), 32));
        // An escaped backslash ends before the quote; what follows the string counts.
        assert!(json_too_deep(br#"["a\\",[[[[1]]]]]"#, 4));
        assert!(!json_too_deep(br#"["a\\",[[[1]]]]"#, 4));
        // An escape or a string cut off at the end of the input.
        assert!(!json_too_deep(br#"[[[["\"#, 4));
        assert!(!json_too_deep(br#"[[[["ab"#, 4));
        assert!(json_too_deep(br#"[[[[["\"#, 4));
    }

    #[test]
    fn json_checks() {
        let r = rules(None);
        assert!(check_json(&r, br#"{"a":1,"b":[true,null,"x"]}"#).is_ok());
        assert_eq!(
            check_json(&r, b"{\"a\":").unwrap_err().reason,
            "malformed_json"
        );
        assert_eq!(
            check_json(&r, b"{} {}").unwrap_err().reason,
            "malformed_json"
        );
        assert_eq!(
            check_json(&r, b"\xff\xfe").unwrap_err().reason,
            "invalid_utf8"
        );
        assert_eq!(
            check_json(&r, br#"{"a":1,"a":2}"#).unwrap_err().reason,
            "json_duplicate_key"
        );
        assert_eq!(
            check_json(&r, br#"{"x":{"a":1,"a":1}}"#)
                .unwrap_err()
                .reason,
            "json_duplicate_key"
        );
        assert_eq!(
            check_json(&r, b"[[[[[[1]]]]]]").unwrap_err().reason,
            "json_too_deep"
        );
    }

    #[test]
    fn schema_violations_list_pointers() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["id"],
            "additionalProperties": false,
            "properties": {"id": {"type": "integer"}, "email": {"type": "string", "format": "email"}}
        });
        let r = rules(Some(schema));
        assert!(check_json(&r, br#"{"id": 7}"#).is_ok());
        let e = check_json(&r, br#"{"id": "x", "extra": 1}"#).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.detail.contains("/id: type"), "{}", e.detail);
        assert!(e.detail.contains("additionalProperties"), "{}", e.detail);
        let e = check_json(&r, br#"{}"#).unwrap_err();
        assert!(e.detail.contains("/: required"), "{}", e.detail);
    }

    /// Each violation is an `errors` entry naming where, which rule and what it asks; the
    /// values sent never appear, the names of unexpected members do (cut to 64 characters).
    #[test]
    fn schema_violations_are_listed_for_programs_without_the_values() {
        let schema = serde_json::json!({
            "type": "object",
            "required": ["id", "email"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "email": {"type": "string", "format": "email"},
                "tags": {"type": "array", "maxItems": 1}
            }
        });
        let r = rules(Some(schema));
        let long_name = "n".repeat(100);
        let body = format!(
            r#"{{"id": "s3cr3t-value", "tags": ["<script>", "x"], "password": "hunter2", "{long_name}": 1}}"#
        );
        let e = check_json(&r, body.as_bytes()).unwrap_err();
        let find = |pointer: &str, keyword: &str| {
            e.errors
                .iter()
                .find(|x| x.pointer == pointer && x.keyword == keyword)
                .unwrap_or_else(|| panic!("no {pointer} {keyword} in {:?}", e.errors))
                .detail
                .clone()
        };
        assert_eq!(find("#/id", "type"), "must be of type integer");
        assert_eq!(find("#", "required"), "the member \"email\" is required");
        assert_eq!(find("#/tags", "maxItems"), "must have at most 1 items");
        let extra = find("#", "additionalProperties");
        assert!(extra.contains("\"password\""), "{extra}");
        assert!(
            extra.contains(&format!("\"{}\"", "n".repeat(64))),
            "{extra}"
        );
        assert!(!extra.contains(&"n".repeat(65)), "{extra}");
        let all = format!("{:?} {}", e.errors, e.detail);
        for secret in ["s3cr3t", "hunter2", "<script>"] {
            assert!(!all.contains(secret), "{secret} echoed: {all}");
        }
        // At most ten entries, however many violations.
        let many: Vec<String> = (0..30).map(|i| format!(r#""x{i}": 1"#)).collect();
        let body = format!(r#"{{"id": 1, "email": "a@b.co", {}}}"#, many.join(", "));
        let e = check_json(&r, body.as_bytes()).unwrap_err();
        assert!(e.errors.len() <= MAX_REPORTED_VIOLATIONS);
        assert!(e.errors[0].detail.contains("and 25 more"), "{:?}", e.errors);
    }
}

#[cfg(test)]
mod members_tests {
    use super::*;

    /// The members the validating parse writes are those the rules' own JSON reader gives,
    /// name for name, in the same order, for every kind of value.
    #[test]
    fn the_validating_parse_writes_the_members_the_rules_would_read() {
        let rules = BodyRules {
            content_types: vec!["application/json".into()],
            schema: None,
            max_json_depth: 32,
        };
        for body in [
            r#"{"z":1,"a":{"":[true,null,-2.5,"x\u00e9\n"],"b":18446744073709551615},"q":"<x>"}"#,
            r#"[[0,1,2,3,4,5,6,7,8,9,10,-9223372036854775808],{"k":1e300,"e":-0.0},[]]"#,
            r#""top""#,
            r#"{"items":[{"sku":"SKU-00001-BLUE-M","qty":2},{"sku":"a\"b","qty":1.5e3}]}"#,
            "{}",
            "3",
        ] {
            let mut validated = json::Members::default();
            check_json_into(&rules, body.as_bytes(), Some(&mut validated)).expect(body);
            let mut read = json::Members::default();
            assert!(json::read(body.as_bytes(), &mut read), "{body}");
            let v: Vec<_> = validated.iter().collect();
            let r: Vec<_> = read.iter().collect();
            assert_eq!(v, r, "{body}");
            assert_eq!(v.is_empty(), body == "{}", "{body}");
        }
        // A refused body writes what was read before the refusal; it goes no further.
        let mut partial = json::Members::default();
        assert!(check_json_into(&rules, br#"{"a":1,"a":2}"#, Some(&mut partial)).is_err());
    }
}
